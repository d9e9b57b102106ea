//! Tier 1's linear model: logistic regression over hashed character and word n-grams.
//!
//! One featurizer serves training ([`train`]) and scoring ([`Model::score`]), so the two cannot
//! drift apart. Text is normalized byte by byte (ASCII letters lowercased, runs of whitespace
//! become one space, everything else kept, so UTF-8 text in any script contributes n-grams);
//! each position emits its character 3-, 4- and 5-gram and each word its unigram and bigram,
//! hashed into `2^BITS` buckets. A text's logit is `bias + sum(weight[bucket]) / sqrt(n)` over
//! its `n` emissions (a length-normalized bag of features).
//!
//! The weights file (`model.bin`, built by `portcullis-inspect-train`, see `MODEL.md`) is:
//! magic `PCIM` + version byte 1, `bits` (u8), `scale` (f32 LE), `bias` (f32 LE), then
//! `2^bits` weights as i8 (`weight = i8 * scale`).

/// Number of hash bits: `2^BITS` weights.
pub const BITS: u32 = 18;
const BUCKETS: usize = 1 << BITS;
const MAGIC: &[u8; 5] = b"PCIM\x01";

/// Longest window scored at once, in bytes: longer text is cut at sentence ends (or, failing
/// those, here) and scored per window; the text's score is its best window's.
pub const WINDOW: usize = 512;

#[inline]
fn mix(x: u64) -> u32 {
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as u32
}

#[inline]
fn norm(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b | 0x20,
        b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => b' ',
        _ => b,
    }
}

#[inline]
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80 || b == b'_'
}

/// Streaming featurizer: feed bytes, it calls `emit` with bucket indices.
#[derive(Default)]
pub(crate) struct Featurizer {
    window: u64,
    filled: u32,
    word: u64,
    in_word: bool,
    prev_word: u64,
    last_space: bool,
}

impl Featurizer {
    /// Starts a new text.
    pub(crate) fn reset(&mut self) {
        *self = Featurizer::default();
    }

    #[inline]
    pub(crate) fn push(&mut self, raw: u8, emit: &mut impl FnMut(u32)) {
        let b = norm(raw);
        if b == b' ' {
            if self.last_space {
                return;
            }
            self.last_space = true;
        } else {
            self.last_space = false;
        }
        self.window = (self.window << 8) | b as u64;
        self.filled = (self.filled + 1).min(8);
        if self.filled >= 3 {
            emit(mix((self.window & 0xff_ffff) ^ (3 << 56)));
        }
        if self.filled >= 4 {
            emit(mix((self.window & 0xffff_ffff) ^ (4 << 56)));
        }
        if self.filled >= 5 {
            emit(mix((self.window & 0xff_ffff_ffff) ^ (5 << 56)));
        }
        if is_word(b) {
            if !self.in_word {
                self.word = 0xcbf2_9ce4_8422_2325;
                self.in_word = true;
            }
            self.word = (self.word ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        } else {
            self.end_word(emit);
        }
    }

    #[inline]
    fn end_word(&mut self, emit: &mut impl FnMut(u32)) {
        if self.in_word {
            self.in_word = false;
            emit(mix(self.word ^ (1 << 60)));
            if self.prev_word != 0 {
                emit(mix(self.prev_word.rotate_left(17) ^ self.word ^ (2 << 60)));
            }
            self.prev_word = self.word;
        }
    }

    /// Ends the text (emits a word in progress).
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(u32)) {
        self.end_word(emit);
    }
}

/// Every bucket a text emits, in order (training's view of a sample).
pub(crate) fn features(text: &str, out: &mut Vec<u32>) {
    out.clear();
    let mut f = Featurizer::default();
    let mut emit = |i| out.push(i);
    for &b in text.as_bytes() {
        f.push(b, &mut emit);
    }
    f.finish(&mut emit);
}

/// A loaded model.
pub struct Model {
    /// Quantized weights, kept as i8 (256 KiB stay in cache; 1 MiB of f32 would not). A
    /// fixed-size array: bucket indices are masked into it, with no bounds check per lookup.
    weights: Box<[i8; BUCKETS]>,
    scale: f32,
    bias: f32,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("buckets", &self.weights.len())
            .field("bias", &self.bias)
            .finish()
    }
}

/// The model shipped in the repository.
static SHIPPED: &[u8] = include_bytes!("model.bin");

/// Why a weights file was refused.
#[derive(Debug, thiserror::Error)]
#[error("inspection model: {0}")]
pub struct ModelError(String);

/// The best-scoring window of a text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Score, 1-99.
    pub score: u8,
    /// Byte range of the window in the text.
    pub start: usize,
    /// End of the window (exclusive), bytes.
    pub end: usize,
}

/// Shorter text is not scored by the model (score 1): a word or two (`text`, `ok`, an id) says
/// nothing, and the model's bias alone would decide.
pub const MIN_BYTES: usize = 12;

/// Maps a logit to the 1-99 score: `1 + round(98 * sigmoid(logit))`; logit 0 is 50.
pub fn score_of(logit: f32) -> u8 {
    let p = 1.0 / (1.0 + (-logit).exp());
    (1.0 + (98.0 * p).round()).clamp(1.0, 99.0) as u8
}

impl Model {
    /// The model shipped with this build.
    pub fn shipped() -> &'static Model {
        static M: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
        M.get_or_init(|| Model::from_bytes(SHIPPED).expect("the shipped model loads"))
    }

    /// Reads a weights file.
    pub fn from_bytes(b: &[u8]) -> Result<Model, ModelError> {
        if b.len() < 15 || &b[..5] != MAGIC {
            return Err(ModelError("not a PCIM v1 weights file".into()));
        }
        if b[5] as u32 != BITS {
            return Err(ModelError(format!(
                "{} hash bits, this build uses {BITS}",
                b[5]
            )));
        }
        let scale = f32::from_le_bytes(b[6..10].try_into().unwrap());
        let bias = f32::from_le_bytes(b[10..14].try_into().unwrap());
        let w = &b[14..];
        if w.len() != BUCKETS {
            return Err(ModelError(format!(
                "{} weights, expected {BUCKETS}",
                w.len()
            )));
        }
        let weights: Box<[i8]> = w.iter().map(|&q| q as i8).collect();
        Ok(Model {
            weights: weights.try_into().expect("length checked above"),
            scale,
            bias,
        })
    }

    /// Writes the weights file: weights quantized to i8 with one scale.
    pub fn to_bytes(weights: &[f32], bias: f32) -> Vec<u8> {
        let max = weights.iter().fold(0f32, |m, w| m.max(w.abs())).max(1e-9);
        let scale = max / 127.0;
        let mut out = Vec::with_capacity(14 + weights.len());
        out.extend_from_slice(MAGIC);
        out.push(BITS as u8);
        out.extend_from_slice(&scale.to_le_bytes());
        out.extend_from_slice(&bias.to_le_bytes());
        out.extend(
            weights
                .iter()
                .map(|w| (w / scale).round().clamp(-127.0, 127.0) as i8 as u8),
        );
        out
    }

    /// Logit of one whole text (no windows): what training and calibration see.
    pub fn logit(&self, text: &str) -> f32 {
        let (mut sum, mut n) = (0i32, 0u32);
        let mut f = Featurizer::default();
        let mut emit = |i: u32| {
            sum += self.weights[i as usize & (BUCKETS - 1)] as i32;
            n += 1;
        };
        for &b in text.as_bytes() {
            f.push(b, &mut emit);
        }
        f.finish(&mut emit);
        self.logit_of(sum, n)
    }

    fn logit_of(&self, sum: i32, n: u32) -> f32 {
        self.bias
            + if n == 0 {
                0.0
            } else {
                self.scale * sum as f32 / (n as f32).sqrt()
            }
    }

    /// Scores a text of at least [`MIN_BYTES`] bytes: windows of up to [`WINDOW`] bytes, cut after a sentence end (`.`, `!`,
    /// `?`, newline) once a window holds at least `WINDOW / 2` bytes; the best window wins.
    pub fn score(&self, text: &str) -> Scored {
        let bytes = text.as_bytes();
        if bytes.len() < MIN_BYTES {
            return Scored {
                score: 1,
                start: 0,
                end: 0,
            };
        }
        let mut best = Scored {
            score: 0,
            start: 0,
            end: 0,
        };
        let mut f = Featurizer::default();
        let (mut sum, mut n, mut start) = (0i32, 0u32, 0usize);
        let weights: &[i8; BUCKETS] = &self.weights;
        let close = |sum: i32, n: u32, start: usize, end: usize, best: &mut Scored| {
            let s = score_of(self.logit_of(sum, n));
            if s > best.score {
                *best = Scored {
                    score: s,
                    start,
                    end,
                };
            }
        };
        for (i, &b) in bytes.iter().enumerate() {
            let mut emit = |k: u32| {
                sum += weights[k as usize & (BUCKETS - 1)] as i32;
                n += 1;
            };
            f.push(b, &mut emit);
            let len = i + 1 - start;
            let boundary = matches!(b, b'.' | b'!' | b'?' | b'\n') && len >= WINDOW / 2;
            // Never cut inside a UTF-8 sequence.
            let forced = len >= WINDOW && bytes.get(i + 1).is_none_or(|&c| (c as i8) >= -0x40);
            if (boundary || forced) && i + 1 < bytes.len() {
                f.finish(&mut emit);
                close(sum, n, start, i + 1, &mut best);
                f.reset();
                sum = 0;
                n = 0;
                start = i + 1;
            }
        }
        let mut emit = |k: u32| {
            sum += weights[k as usize & (BUCKETS - 1)] as i32;
            n += 1;
        };
        f.finish(&mut emit);
        close(sum, n, start, bytes.len(), &mut best);
        best
    }
}

/// A labelled sample.
pub struct Sample {
    /// The text.
    pub text: String,
    /// 1: injection, 0: benign.
    pub label: bool,
}

/// Training settings (the defaults are what produced the shipped model).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Passes over the training set.
    pub epochs: u32,
    /// Initial learning rate (decays as `lr / (1 + epoch)`).
    pub learning_rate: f32,
    /// L2 penalty per update.
    pub l2: f32,
    /// Seed of the shuffle (a fixed xorshift: the same data gives the same weights).
    pub seed: u64,
    /// Largest false-positive rate on the calibration set at score 50.
    pub target_fpr: f64,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            epochs: 12,
            learning_rate: 0.5,
            l2: 1e-6,
            seed: 0x5eed_1234_abcd_0001,
            target_fpr: 0.01,
        }
    }
}

/// Trains on `train` by stochastic gradient descent on the logistic loss, then moves the bias
/// so that score 50 is the logit at which the `calibrate` set's false-positive rate is at most
/// `target_fpr`. Returns the weights file.
pub fn train(train: &[Sample], calibrate: &[Sample], o: &TrainOptions) -> Vec<u8> {
    let feats: Vec<(Vec<(u32, f32)>, f32)> = train
        .iter()
        .map(|s| (sparse(&s.text), if s.label { 1.0 } else { 0.0 }))
        .collect();
    let mut w = vec![0f32; BUCKETS];
    let mut bias = 0f32;
    let mut order: Vec<usize> = (0..feats.len()).collect();
    let mut rng = o.seed.max(1);
    for epoch in 0..o.epochs {
        // Fisher-Yates with xorshift64.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let lr = o.learning_rate / (1.0 + epoch as f32);
        for &k in &order {
            let (x, y) = &feats[k];
            let z = bias + x.iter().map(|&(i, v)| w[i as usize] * v).sum::<f32>();
            let p = 1.0 / (1.0 + (-z).exp());
            let g = p - y;
            for &(i, v) in x {
                let wi = &mut w[i as usize];
                *wi -= lr * (g * v + o.l2 * *wi);
            }
            bias -= lr * g;
        }
    }
    // Quantize first, then calibrate what will actually run.
    let model = Model::from_bytes(&Model::to_bytes(&w, bias)).expect("own bytes load");
    let mut negatives: Vec<f32> = calibrate
        .iter()
        .filter(|s| !s.label)
        .map(|s| model.logit(&s.text))
        .collect();
    negatives.sort_by(|a, b| b.total_cmp(a));
    let allowed = (o.target_fpr * negatives.len() as f64).floor() as usize;
    // Score 50 starts at p = 48.5 / 98 (logit -0.0204): the first negative that must stay
    // below the threshold moves to logit -0.03 (score 49).
    let cut = negatives.get(allowed).copied().unwrap_or(0.0) + 0.03;
    Model::to_bytes(&w, bias - cut)
}

fn sparse(text: &str) -> Vec<(u32, f32)> {
    let mut idx = Vec::new();
    features(text, &mut idx);
    let n = idx.len().max(1) as f32;
    idx.sort_unstable();
    let mut out: Vec<(u32, f32)> = Vec::with_capacity(idx.len());
    for i in idx {
        match out.last_mut() {
            Some((j, c)) if *j == i => *c += 1.0,
            _ => out.push((i, 1.0)),
        }
    }
    let inv = 1.0 / n.sqrt();
    for (_, c) in &mut out {
        *c *= inv;
    }
    out
}

/// Precision, recall and false-positive rate of `model` at `threshold` over `samples`, scoring
/// each sample the way the portal does ([`Model::score`]).
pub fn evaluate(model: &Model, samples: &[Sample], threshold: u8) -> Metrics {
    let mut m = Metrics::default();
    for s in samples {
        let hit = model.score(&s.text).score >= threshold;
        match (s.label, hit) {
            (true, true) => m.tp += 1,
            (true, false) => m.fn_ += 1,
            (false, true) => m.fp += 1,
            (false, false) => m.tn += 1,
        }
    }
    m
}

/// A confusion matrix.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// True negatives.
    pub tn: u64,
    /// False negatives.
    pub fn_: u64,
}

impl Metrics {
    /// tp / (tp + fp); NaN without positives predicted.
    pub fn precision(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fp) as f64
    }
    /// tp / (tp + fn).
    pub fn recall(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fn_) as f64
    }
    /// fp / (fp + tn); NaN without negatives.
    pub fn fpr(&self) -> f64 {
        self.fp as f64 / (self.fp + self.tn) as f64
    }
}

/// Reads `{"text": ..., "label": 0|1}` JSON lines (what `proxy/inspect-data/fetch.py` writes).
pub fn read_jsonl(text: &str) -> Result<Vec<Sample>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            #[derive(serde::Deserialize)]
            struct Row {
                text: String,
                label: u8,
            }
            let r: Row = serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1))?;
            Ok(Sample {
                text: r.text,
                label: r.label != 0,
            })
        })
        .collect()
}

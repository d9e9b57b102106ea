//! The LLM gateway: OpenAI- and Anthropic-compatible endpoints of a portal (`spec.llm`).
//!
//! A request names a model alias; the caller must hold a grant for it (an McpPolicy's `models`
//! covering them: default deny, 403 in the caller's API format); the alias's targets are tried
//! in [`routes::attempt_order`], moving on only on 429, 5xx, 529, timeouts and connection errors
//! ([`routes::fails_over`]), skipping targets whose circuit breaker is open. A target that
//! speaks the caller's API gets the request as sent (the model replaced); another gets it
//! translated ([`translate`]), and its answer, streamed or not, is translated back. Every call
//! writes one audit event (subject, alias, provider, tokens, outcome; never the prompt) and
//! moves the `gen_ai_*` metrics.
//!
//! The files, by concern: [`routes`] (attempt order, failover decisions, circuit breakers),
//! [`openai`] and [`anthropic`] (each API's errors, usage, framing), [`translate`] (between the
//! two), [`provider`] (the HTTP client of one attempt), [`stream`] (relaying event streams).

pub mod anthropic;
pub mod budget;
pub mod guard;
pub mod openai;
pub mod provider;
pub mod responses;
pub mod routes;
pub mod stream;
pub mod translate;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crds::McpPolicy;
use crds::glob::Glob;
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;

use crate::audit::{AuditLog, Event, LlmCall, Outcome};
use crate::config::{LlmConfig, LlmRouteConfig, PortalConfig};
use crate::metrics::{
    BudgetLabels, LlmLabels, Metrics, SpendLabels, StoreErrorLabels, TokenLabels, TokensLabels,
};
use crate::model::Identity;
use provider::Attempt;
use routes::{Breakers, Failure};

/// The API a caller (or a provider) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Dialect {
    /// `openai` or `anthropic`.
    pub fn id(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }

    /// The audit event's method for a call in this dialect.
    fn method(self) -> &'static str {
        match self {
            Dialect::OpenAi => "llm/chat.completions",
            Dialect::Anthropic => "llm/messages",
        }
    }
}

/// Token counts of one call. `input` counts every prompt token (cached ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached: u64,
}

/// The kinds of error both APIs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400.
    InvalidRequest,
    /// 401.
    Authentication,
    /// 403.
    Permission,
    /// 404.
    NotFound,
    /// 413.
    TooLarge,
    /// 429.
    RateLimit,
    /// 5xx.
    Api,
    /// 529 (Anthropic's overloaded).
    Overloaded,
}

impl ErrorKind {
    /// The kind a status stands for.
    pub fn of(status: u16) -> ErrorKind {
        match status {
            400 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::TooLarge,
            429 => ErrorKind::RateLimit,
            529 => ErrorKind::Overloaded,
            _ => ErrorKind::Api,
        }
    }
}

/// An error answer in `dialect`'s format.
pub fn error(dialect: Dialect, status: u16, message: &str) -> Response {
    let kind = ErrorKind::of(status);
    let body = match dialect {
        Dialect::OpenAi => openai::error_body(kind, message, None),
        Dialect::Anthropic => anthropic::error_body(kind, message),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, axum::Json(body)).into_response()
}

/// Who may call which alias: each policy's `models` globs, with the policy to match subjects.
struct Grant {
    policy: McpPolicy,
    models: Vec<Glob>,
}

/// The configuration the gateway serves.
struct State {
    portal: String,
    llm: Option<LlmConfig>,
    grants: Vec<Grant>,
    budgets: budget::Budgets,
    /// The DLP rules that may cover prompts and completions.
    dlp: guard::Rules,
}

impl State {
    fn of(cfg: &PortalConfig) -> State {
        State {
            portal: cfg.name.clone(),
            llm: cfg.llm.clone(),
            budgets: budget::Budgets::of(&cfg.policies),
            dlp: guard::Rules::of(&cfg.policies),
            grants: cfg
                .policies
                .iter()
                .filter(|p| !p.spec.models.is_empty())
                .map(|p| Grant {
                    policy: p.clone(),
                    models: p.spec.models.iter().map(|g| Glob::new(g)).collect(),
                })
                .collect(),
        }
    }

    /// The policy decision on `alias` for `identity` (the policies' access conditions apply).
    fn model_access(&self, identity: &Identity, alias: &str) -> crate::policy::ModelAccess {
        crate::policy::model_access(
            self.grants
                .iter()
                .filter(|g| g.models.iter().any(|m| m.matches(alias)))
                .map(|g| &g.policy),
            identity,
        )
    }

    fn may_use(&self, identity: &Identity, alias: &str) -> bool {
        self.model_access(identity, alias).is_granted()
    }
}

/// The gateway of one portal: its routes, grants, breakers and provider client.
pub struct Gateway {
    state: ArcSwap<State>,
    /// The budget ledger over the configured store (rebuilt when `spec.llm.budgetStore`
    /// changes).
    ledger: ArcSwap<budget::Ledger>,
    /// The store configuration the ledger was built from.
    store_cfg: std::sync::Mutex<crate::config::BudgetStoreConfig>,
    /// The in-memory store, kept across reconfigurations.
    memory: Arc<budget::memory::MemoryStore>,
    breakers: Breakers,
    client: reqwest::Client,
    audit: Option<Arc<AuditLog>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gateway")
    }
}

/// What a call did, for its audit event and metrics.
#[derive(Debug, Default)]
struct Record {
    alias: String,
    provider: String,
    target_model: String,
    attempts: u32,
    failures: Vec<String>,
    usage: Option<Usage>,
    stream: bool,
    /// What the call cost (nano-units), when a budget or a price applies.
    cost: Option<u64>,
    /// The usage was counted by the portal (the provider reported none).
    estimated: bool,
    /// DLP findings on the prompt and the completion.
    findings: guard::Findings,
    /// Time spent in the gateway itself (before the first provider attempt, and processing
    /// the answer), when a provider answered.
    overhead: Option<std::time::Duration>,
}

impl Gateway {
    /// The gateway of `cfg` (no `spec.llm`: every `/llm/` request gets 404).
    pub fn new(cfg: &PortalConfig, audit: Option<Arc<AuditLog>>, metrics: Arc<Metrics>) -> Self {
        let memory = Arc::new(budget::memory::MemoryStore::default());
        if cfg.policies.iter().any(|p| !p.spec.budgets.is_empty()) {
            // The tokenizer loads in ~0.1 s: not on the first budgeted call.
            std::thread::spawn(|| budget::estimate::tokens("warm up"));
        }
        let store_cfg = cfg
            .llm
            .as_ref()
            .map(|l| l.budget_store.clone())
            .unwrap_or_default();
        Gateway {
            ledger: ArcSwap::from_pointee(ledger_for(&cfg.name, &store_cfg, &memory)),
            store_cfg: std::sync::Mutex::new(store_cfg),
            memory,
            state: ArcSwap::from_pointee(State::of(cfg)),
            breakers: Breakers::default(),
            client: provider::client(),
            audit,
            metrics,
        }
    }

    /// Puts a new configuration in force (routes, keys, grants); calls in flight finish on
    /// the old one.
    pub fn reconfigure(&self, cfg: &PortalConfig) {
        let store_cfg = cfg
            .llm
            .as_ref()
            .map(|l| l.budget_store.clone())
            .unwrap_or_default();
        let mut current = self.store_cfg.lock().unwrap_or_else(|e| e.into_inner());
        if *current != store_cfg {
            self.ledger
                .store(Arc::new(ledger_for(&cfg.name, &store_cfg, &self.memory)));
            *current = store_cfg;
        }
        drop(current);
        self.state.store(Arc::new(State::of(cfg)));
    }

    /// `GET /admin/spend`: every budget that applies to `identity`, with its window, limit,
    /// spend, reservations in flight and reset.
    pub async fn spend(&self, identity: &Identity) -> Result<Value, budget::StoreError> {
        let state = self.state.load_full();
        let counters = state.budgets.counters(identity, None);
        let ledger = self.ledger.load_full();
        let now = budget::now();
        let states = ledger.store().snapshot(&counters, now).await?;
        let budgets: Vec<Value> = counters
            .iter()
            .zip(&states)
            .map(|(c, s)| spend_entry(c, s, now))
            .collect();
        Ok(serde_json::json!({
            "portal": state.portal,
            "subject": identity.subject,
            "store": self.store_kind(),
            "budgets": budgets,
        }))
    }

    /// `GET /admin/spend/summary`: every budget of the portal's policies (only `policy`'s,
    /// when given) with its spend, subjects in aggregate only ([`budget::summary`]); at most
    /// `max_subjects` counters read per `user` budget. With the memory store the figures are
    /// this replica's, and it says which replica it is.
    pub async fn spend_summary(
        &self,
        policy: Option<&str>,
        max_subjects: usize,
    ) -> Result<crds::budget::SpendSummary, budget::StoreError> {
        let state = self.state.load_full();
        let ledger = self.ledger.load_full();
        let store = self.store_kind();
        let policies = budget::summary::summarize(
            &state.budgets,
            ledger.store().as_ref(),
            policy,
            budget::now(),
            max_subjects,
        )
        .await?;
        Ok(crds::budget::SpendSummary {
            portal: state.portal.clone(),
            store: store.to_owned(),
            replica: (store == "memory").then(replica_name),
            policies,
        })
    }

    fn store_kind(&self) -> &'static str {
        let cfg = self.store_cfg.lock().unwrap_or_else(|e| e.into_inner());
        if cfg.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// `GET /v1/models` in `dialect`: the aliases `identity` may call.
    pub fn models(&self, dialect: Dialect, identity: &Identity) -> Response {
        let state = self.state.load();
        let Some(llm) = &state.llm else {
            return no_gateway(dialect);
        };
        let aliases: Vec<String> = llm
            .routes
            .iter()
            .filter(|r| state.may_use(identity, &r.alias))
            .map(|r| r.alias.clone())
            .collect();
        axum::Json(match dialect {
            Dialect::OpenAi => openai::models(&aliases),
            Dialect::Anthropic => anthropic::models(&aliases),
        })
        .into_response()
    }

    /// A Chat Completions (`OpenAi`) or Messages (`Anthropic`) request from `identity`.
    pub async fn call(&self, caller: Dialect, identity: &Identity, body: &[u8]) -> Response {
        let started = Instant::now();
        let state = self.state.load_full();
        let Some(llm) = &state.llm else {
            return no_gateway(caller);
        };
        let mut req: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return error(caller, 400, "the request body must be a JSON object"),
        };
        let Some(alias) = req.get("model").and_then(Value::as_str).map(str::to_owned) else {
            return error(
                caller,
                400,
                "model: required (a model alias of this portal)",
            );
        };
        let alias = alias.as_str();
        let mut rec = Record {
            alias: alias.to_owned(),
            stream: req.get("stream").and_then(Value::as_bool) == Some(true),
            ..Default::default()
        };
        let Some(route) = llm.routes.iter().find(|r| r.alias == alias) else {
            return error(
                caller,
                404,
                &format!("model {alias:?} is not a model alias of this portal"),
            );
        };
        let access = state.model_access(identity, alias);
        if !access.is_granted() {
            // Audited and answered with the policy and selector that decided, never the
            // token or the certificate.
            let (reason, message) = match &access {
                crate::policy::ModelAccess::NotMet(policy, u) => (
                    format!("{policy} grants the model; {} not met", u.selector),
                    format!(
                        "you may not use model {alias:?}: McpPolicy {policy} grants it only when {} is met",
                        u.selector
                    ),
                ),
                _ => (
                    "no grant for the model".to_owned(),
                    format!("you may not use model {alias:?} (no McpPolicy grants it to you)"),
                ),
            };
            self.finish(
                &state,
                caller,
                identity,
                &rec,
                Outcome::Deny,
                Some(reason),
                started,
            );
            return error(caller, 403, &message);
        }
        // DLP on the prompt, before any budget or provider sees it.
        let dlp = match state.dlp.engine(identity, alias) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(portal = %state.portal, error = %e, "DLP rules do not compile: LLM call refused");
                self.finish(
                    &state,
                    caller,
                    identity,
                    &rec,
                    Outcome::Error,
                    Some("DLP rules do not compile".into()),
                    started,
                );
                return error(caller, 500, "the portal's DLP rules cannot be applied");
            }
        };
        if let Some(engine) = &dlp
            && let Some(b) = guard::scan_prompt(engine, caller, &mut req, alias, &mut rec.findings)
        {
            self.finish(
                &state,
                caller,
                identity,
                &rec,
                Outcome::Block,
                Some(b.reason("prompt")),
                started,
            );
            return guard::refusal(caller, 400, &b.message("the prompt was"));
        }
        // Every target's form of the request is made before any is sent, so a request one of
        // the targets could not take is refused whichever target would serve it.
        let mut bodies = match provider_bodies(caller, &req, route) {
            Ok(b) => b,
            Err(translate::Untranslatable(msg)) => {
                self.finish(
                    &state,
                    caller,
                    identity,
                    &rec,
                    Outcome::Deny,
                    Some("untranslatable".into()),
                    started,
                );
                return error(caller, 400, &msg);
            }
        };
        // Budgets: the worst case is reserved before any provider sees the request.
        let mut hold = None;
        let counters = state.budgets.counters(identity, Some(alias));
        if !counters.is_empty() {
            let ledger = self.ledger.load_full();
            let input = budget::estimate::prompt_tokens(&req);
            let max_output = budget::estimate::max_tokens(&req);
            let price = budget::dearest(route.targets.iter().map(|t| t.price.as_ref()));
            match ledger
                .reserve(counters, input, max_output, price, budget::now())
                .await
            {
                budget::Admission::Free => {}
                budget::Admission::Admitted(h) => {
                    if h.set_max {
                        cap_bodies(&mut bodies, route, h.output);
                    }
                    hold = Some(h);
                }
                budget::Admission::Refused {
                    budget,
                    tokens,
                    retry_after,
                } => {
                    self.metrics
                        .llm
                        .budget_refusals
                        .get_or_create(&BudgetLabels {
                            portal: state.portal.clone(),
                            budget: budget.clone(),
                        })
                        .inc();
                    self.finish(
                        &state,
                        caller,
                        identity,
                        &rec,
                        Outcome::Deny,
                        Some(format!("budget {budget} exhausted")),
                        started,
                    );
                    return budget_refusal(caller, &budget, tokens, retry_after);
                }
                budget::Admission::Unavailable(e) => {
                    tracing::warn!(portal = %state.portal, error = %e, "budget store unavailable: call refused (fail closed)");
                    self.store_error(&state.portal, "failClosed");
                    self.finish(
                        &state,
                        caller,
                        identity,
                        &rec,
                        Outcome::Error,
                        Some("budget store unavailable".into()),
                        started,
                    );
                    return error(
                        caller,
                        503,
                        "the portal cannot check your budget right now; retry later",
                    );
                }
                budget::Admission::Unmetered(e) => {
                    tracing::warn!(portal = %state.portal, error = %e, "budget store unavailable: call served uncounted (fail open)");
                    self.store_error(&state.portal, "failOpen");
                }
            }
        }
        let keys: Vec<String> = route.targets.iter().map(|t| t.describe()).collect();
        let order = routes::attempt_order(
            route,
            &self.breakers.open(&keys, Instant::now()),
            rand::random(),
        );
        let mut last: Option<(Failure, Option<String>)> = None;
        let before_provider = started.elapsed();
        for i in order {
            let target = &route.targets[i];
            rec.attempts += 1;
            rec.provider = target.provider.id().to_owned();
            rec.target_model = target.model.clone();
            let attempt = provider::send(&self.client, target, &bodies[i], rec.stream).await;
            let failed = matches!(attempt, Attempt::Failed { .. });
            self.breakers.record(&keys[i], failed, Instant::now());
            let target_dialect = provider::dialect(target.provider);
            match attempt {
                Attempt::Failed {
                    failure,
                    retry_after,
                } => {
                    rec.failures.push(failure.label());
                    last = Some((failure, retry_after));
                }
                Attempt::Answer { status, body } => {
                    let answer = Answer {
                        target: target_dialect,
                        status,
                        body,
                        price: target.price,
                        received: Instant::now(),
                        before_provider,
                    };
                    return self
                        .answer(
                            &state,
                            caller,
                            identity,
                            rec,
                            answer,
                            &req,
                            hold,
                            dlp.as_ref(),
                            started,
                        )
                        .await;
                }
                Attempt::Stream(resp) => {
                    let include_usage = req
                        .pointer("/stream_options/include_usage")
                        .and_then(Value::as_bool)
                        == Some(true);
                    let xform = stream::Xform::new(caller, target_dialect, include_usage);
                    let cap = hold
                        .as_ref()
                        .filter(|h| h.hard())
                        .map(|h| stream::Cap { output: h.output });
                    let meter = hold.is_some();
                    let stream_guard = dlp
                        .clone()
                        .and_then(|e| guard::StreamGuard::new(e, caller, alias));
                    let price = target.price;
                    let input_estimate = hold.as_ref().map(|h| h.input);
                    let done = {
                        let audit = self.audit.clone();
                        let metrics = self.metrics.clone();
                        let state = state.clone();
                        let subject = identity.subject.clone();
                        move |mut rec: Record,
                              metered: stream::Metered,
                              outcome: Outcome,
                              reason: Option<String>| async move {
                            rec.overhead = Some(metered.overhead);
                            if let (Some(t), Outcome::Allow) = (metered.first_token, outcome) {
                                metrics
                                    .llm
                                    .time_to_first_token
                                    .get_or_create(&crate::metrics::ModelLabels {
                                        model: rec.alias.clone(),
                                        provider: rec.provider.clone(),
                                    })
                                    .observe(t.as_secs_f64());
                            }
                            if let Some(h) = hold {
                                let (usage, estimated) =
                                    stream_usage(rec.usage, &metered, input_estimate.unwrap_or(0));
                                settle(
                                    &metrics,
                                    &state.portal,
                                    h,
                                    &mut rec,
                                    usage,
                                    estimated,
                                    price,
                                )
                                .await;
                            } else if let Some(u) = rec.usage {
                                rec.cost = price
                                    .map(|p| budget::cost(Some(&p), u.input, u.cached, u.output));
                            }
                            write_record(
                                audit.as_deref(),
                                &metrics,
                                &state.portal,
                                caller,
                                &subject,
                                &rec,
                                outcome,
                                reason,
                                started,
                            );
                        }
                    };
                    let timing = stream::Timing {
                        started,
                        before_provider,
                    };
                    return stream::relay(resp, xform, rec, cap, meter, stream_guard, timing, done);
                }
            }
        }
        // No answer: nothing to charge.
        if let Some(h) = hold
            && let Err(e) = h
                .settle(budget::account::Amount::default(), budget::now())
                .await
        {
            tracing::warn!(portal = %state.portal, error = %e, "budget store unavailable: a reservation stays until it expires");
            self.store_error(&state.portal, "settle");
        }
        let (failure, retry_after) = last.unwrap_or((Failure::Connect, None));
        self.finish(
            &state,
            caller,
            identity,
            &rec,
            Outcome::Error,
            Some(format!("every target failed: {}", rec.failures.join(", "))),
            started,
        );
        let (status, msg) = match failure {
            Failure::Status(429) => (
                429,
                format!("every target of model {alias:?} is rate limited; retry later"),
            ),
            Failure::Status(529) => (
                529,
                format!("every target of model {alias:?} is overloaded; retry later"),
            ),
            _ => (
                502,
                format!(
                    "every target of model {alias:?} failed (last: {})",
                    failure.label()
                ),
            ),
        };
        let status = if status == 529 && caller == Dialect::OpenAi {
            503
        } else {
            status
        };
        let mut resp = error(caller, status, &msg);
        if let Some(v) = retry_after.and_then(|r| HeaderValue::from_str(&r).ok()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }

    /// An OpenAI Responses request (`POST /v1/responses`): served as a Chat Completions call
    /// ([`Gateway::call`]: the same grant, routing, failover, budgets, DLP and audit), its answer
    /// made a Response object, or its stream the Responses events
    /// ([`responses::StreamToResponses`]); errors are OpenAI's.
    pub async fn responses(&self, identity: &Identity, body: &[u8]) -> Response {
        let req: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return error(
                    Dialect::OpenAi,
                    400,
                    "the request body must be a JSON object",
                );
            }
        };
        let chat = match responses::request_to_chat(&req) {
            Ok(c) => c,
            Err(translate::Untranslatable(msg)) => return error(Dialect::OpenAi, 400, &msg),
        };
        let body = serde_json::to_vec(&chat).expect("JSON values serialize");
        let resp = self.call(Dialect::OpenAi, identity, &body).await;
        if !resp.status().is_success() {
            return resp;
        }
        if chat.get("stream").and_then(Value::as_bool) == Some(true) {
            return responses_stream(resp);
        }
        let Ok(bytes) = axum::body::to_bytes(resp.into_body(), provider::MAX_ANSWER_BYTES).await
        else {
            return error(
                Dialect::OpenAi,
                502,
                "the provider's answer could not be read",
            );
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => axum::Json(responses::chat_to_response(&v)).into_response(),
            Err(_) => error(Dialect::OpenAi, 502, "the provider's answer is not JSON"),
        }
    }

    /// A provider's whole answer, in the caller's dialect; its usage settles the call's
    /// budget hold.
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        state: &State,
        caller: Dialect,
        identity: &Identity,
        mut rec: Record,
        answer: Answer,
        req: &Value,
        hold: Option<budget::Hold>,
        dlp: Option<&Arc<crate::dlp::Engine>>,
        started: Instant,
    ) -> Response {
        let Answer {
            target,
            status,
            body,
            price,
            received,
            before_provider,
        } = answer;
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let ok_json = (200..300).contains(&status) && parsed.is_some();
        if let Some(v) = parsed.as_ref().filter(|_| ok_json) {
            let reported = match target {
                Dialect::OpenAi => openai::usage(v),
                Dialect::Anthropic => anthropic::usage(v),
            };
            let (usage, estimated) = match reported {
                Some(u) => (u, false),
                None => (
                    Usage {
                        input: hold
                            .as_ref()
                            .map_or_else(|| budget::estimate::prompt_tokens(req), |h| h.input),
                        output: budget::estimate::answer_tokens(v),
                        cached: 0,
                    },
                    true,
                ),
            };
            rec.usage = Some(usage);
            rec.estimated = estimated;
            match hold {
                Some(h) => {
                    settle(
                        &self.metrics,
                        &state.portal,
                        h,
                        &mut rec,
                        usage,
                        estimated,
                        price,
                    )
                    .await
                }
                None => {
                    rec.cost = price
                        .map(|p| budget::cost(Some(&p), usage.input, usage.cached, usage.output))
                }
            }
        } else if let Some(h) = hold {
            // The provider refused or answered nonsense: nothing to charge.
            if let Err(e) = h
                .settle(budget::account::Amount::default(), budget::now())
                .await
            {
                tracing::warn!(portal = %state.portal, error = %e, "budget store unavailable: a reservation stays until it expires");
                self.store_error(&state.portal, "settle");
            }
        }
        if !(200..300).contains(&status) {
            let msg = parsed
                .as_ref()
                .and_then(|v| match target {
                    Dialect::OpenAi => openai::error_message(v),
                    Dialect::Anthropic => anthropic::error_message(v),
                })
                .unwrap_or("the provider refused the request")
                .to_owned();
            self.finish(
                state,
                caller,
                identity,
                &rec,
                Outcome::Error,
                Some(format!("provider status {status}")),
                started,
            );
            if status == 401 || status == 403 {
                // The portal's key was refused: not the caller's credentials.
                return error(
                    caller,
                    502,
                    &format!(
                        "the provider behind model {:?} refused the portal's credentials",
                        rec.alias
                    ),
                );
            }
            if caller == target && parsed.is_some() {
                return raw(status, body);
            }
            return error(caller, status, &msg);
        }
        let Some(v) = parsed else {
            self.finish(
                state,
                caller,
                identity,
                &rec,
                Outcome::Error,
                Some("provider answer is not JSON".into()),
                started,
            );
            return error(caller, 502, "the provider's answer is not JSON");
        };
        let (mut out, translated) = match (caller, target) {
            (a, b) if a == b => (v, false),
            (Dialect::OpenAi, _) => (translate::anthropic_response_to_openai(&v), true),
            (Dialect::Anthropic, _) => (translate::openai_response_to_anthropic(&v), true),
        };
        // DLP on the completion, in the caller's format.
        let mut scanned = false;
        if let Some(engine) =
            dlp.filter(|e| e.applies_to_model(crate::dlp::Scope::Results, &rec.alias))
        {
            scanned = true;
            let alias = rec.alias.clone();
            if let Some(b) =
                guard::scan_completion(engine, caller, &mut out, &alias, &mut rec.findings)
            {
                self.finish(
                    state,
                    caller,
                    identity,
                    &rec,
                    Outcome::Block,
                    Some(b.reason("answer")),
                    started,
                );
                return guard::refusal(caller, 403, &b.message("the answer was"));
            }
        }
        let resp = if translated || (scanned && !rec.findings.is_empty()) {
            axum::Json(out).into_response()
        } else {
            raw(status, body)
        };
        rec.overhead = Some(before_provider + received.elapsed());
        self.finish(state, caller, identity, &rec, Outcome::Allow, None, started);
        resp
    }

    fn store_error(&self, portal: &str, action: &str) {
        self.metrics
            .llm
            .budget_store_errors
            .get_or_create(&StoreErrorLabels {
                portal: portal.to_owned(),
                action: action.to_owned(),
            })
            .inc();
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        state: &State,
        caller: Dialect,
        identity: &Identity,
        rec: &Record,
        outcome: Outcome,
        reason: Option<String>,
        started: Instant,
    ) {
        write_record(
            self.audit.as_deref(),
            &self.metrics,
            &state.portal,
            caller,
            &identity.subject,
            rec,
            outcome,
            reason,
            started,
        );
    }
}

/// A provider's whole answer and the price of the target that gave it.
struct Answer {
    target: Dialect,
    status: u16,
    body: Bytes,
    price: Option<crate::config::PriceConfig>,
    /// When the answer was in.
    received: Instant,
    /// The gateway's time before the first provider attempt.
    before_provider: std::time::Duration,
}

/// The ledger over the store `cfg` names: Redis when configured (a URL the client refuses
/// falls back to refusing every budgeted call, as an unreachable store would), else memory.
fn ledger_for(
    portal: &str,
    cfg: &crate::config::BudgetStoreConfig,
    memory: &Arc<budget::memory::MemoryStore>,
) -> budget::Ledger {
    let store: Arc<dyn budget::Store> = match &cfg.redis {
        Some(r) => match budget::redis::RedisStore::new(r) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(portal, error = %e, "spec.llm.budgetStore.redis: cannot be used");
                Arc::new(Unreachable(e))
            }
        },
        None => memory.clone(),
    };
    budget::Ledger::new(store, cfg.on_unavailable)
}

/// A store that cannot be used: every operation fails as an unreachable one would.
#[derive(Debug)]
struct Unreachable(budget::StoreError);

#[async_trait::async_trait]
impl budget::Store for Unreachable {
    async fn reserve(
        &self,
        _: &[budget::account::CounterRef],
        _: &str,
        _: budget::account::Amount,
        _: i64,
    ) -> Result<budget::Reserve, budget::StoreError> {
        Err(self.0.clone())
    }
    async fn settle(
        &self,
        _: &[budget::account::CounterRef],
        _: &str,
        _: budget::account::Amount,
        _: i64,
    ) -> Result<Vec<budget::account::Snapshot>, budget::StoreError> {
        Err(self.0.clone())
    }
    async fn snapshot(
        &self,
        _: &[budget::account::CounterRef],
        _: i64,
    ) -> Result<Vec<budget::account::Snapshot>, budget::StoreError> {
        Err(self.0.clone())
    }
    async fn users(
        &self,
        _: &str,
        _: i64,
        _: usize,
    ) -> Result<(Vec<String>, usize), budget::StoreError> {
        Err(self.0.clone())
    }
}

/// Settles `hold` with `usage` at `price`; records cost and soft-limit crossings.
async fn settle(
    metrics: &Metrics,
    portal: &str,
    hold: budget::Hold,
    rec: &mut Record,
    usage: Usage,
    estimated: bool,
    price: Option<crate::config::PriceConfig>,
) {
    rec.usage = Some(usage);
    rec.estimated = estimated;
    let cost = budget::cost(price.as_ref(), usage.input, usage.cached, usage.output);
    rec.cost = Some(cost);
    let counters = hold.counters().to_vec();
    let used = budget::account::Amount {
        tokens: usage.input.saturating_add(usage.output),
        cost,
    };
    match hold.settle(used, budget::now()).await {
        Ok(states) => {
            for (c, s) in counters.iter().zip(&states) {
                if !c.hard && !c.limit.admits(s.spent) {
                    tracing::warn!(portal, budget = %c.budget, counter = %c.key, spent_tokens = s.spent.tokens,
                        "soft budget exceeded: the call was served and counted");
                    metrics
                        .llm
                        .budget_soft_exceeded
                        .get_or_create(&BudgetLabels {
                            portal: portal.to_owned(),
                            budget: c.budget.clone(),
                        })
                        .inc();
                }
            }
        }
        Err(e) => {
            tracing::warn!(portal, error = %e, "budget store unavailable: a call's spend could not be settled (its reservation is charged in full when it expires)");
            metrics
                .llm
                .budget_store_errors
                .get_or_create(&StoreErrorLabels {
                    portal: portal.to_owned(),
                    action: "settle".into(),
                })
                .inc();
        }
    }
}

/// What a stream used: the provider's report when it gave one for the whole stream (an
/// OpenAI usage chunk, Anthropic's message_start and last message_delta); else the prompt
/// as reported or counted and the completion tokens counted in what was streamed (marked
/// estimated). A stream cut short (capped, or its caller gone) is charged for what was
/// streamed.
fn stream_usage(
    reported: Option<Usage>,
    m: &stream::Metered,
    input_estimate: u64,
) -> (Usage, bool) {
    match reported {
        Some(u) if m.complete && !m.capped => (u, false),
        Some(u) => (
            Usage {
                input: if u.input > 0 { u.input } else { input_estimate },
                output: u.output.max(m.counted_output),
                cached: u.cached,
            },
            u.input == 0 || m.counted_output > u.output,
        ),
        None => (
            Usage {
                input: input_estimate,
                output: m.counted_output,
                cached: 0,
            },
            true,
        ),
    }
}

/// Sets the completion limit of every target's request to `output` (the client set none and
/// a hard budget applies): `max_completion_tokens` for OpenAI itself, `max_tokens` otherwise.
fn cap_bodies(bodies: &mut [Value], route: &LlmRouteConfig, output: u64) {
    for (b, t) in bodies.iter_mut().zip(&route.targets) {
        let field = if t.provider == crds::llm::LlmProvider::OpenAi {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        b[field] = Value::from(output);
    }
}

/// A budget refusal in the caller's format: 429, OpenAI `insufficient_quota` or Anthropic
/// `rate_limit_error`, `Retry-After` at the reset and `x-should-retry: false` (the official
/// SDKs would otherwise retry a 429 in vain).
fn budget_refusal(caller: Dialect, budget: &str, tokens: bool, retry_after: u64) -> Response {
    let what = if tokens { "token" } else { "spending" };
    let message = format!(
        "the {what} budget {budget} has no room for this request (its worst case: prompt plus max_tokens); it frees up in {retry_after} s"
    );
    let body = match caller {
        Dialect::OpenAi => openai::quota_error_body(&message),
        Dialect::Anthropic => anthropic::error_body(ErrorKind::RateLimit, &message),
    };
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    h.insert("x-should-retry", HeaderValue::from_static("false"));
    resp
}

/// This replica's name: `HOSTNAME` (in Kubernetes the pod's name), else the kernel's host name.
fn replica_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default()
}

/// One budget in the spend report.
fn spend_entry(c: &budget::account::CounterRef, s: &budget::account::Snapshot, now: i64) -> Value {
    use crds::budget::format_money;
    let window = match c.window {
        budget::account::Window::Calendar(crds::budget::CalendarWindow::Day) => "day".to_owned(),
        budget::account::Window::Calendar(crds::budget::CalendarWindow::Month) => {
            "month".to_owned()
        }
        budget::account::Window::Rolling(secs) => format!("rolling {secs}s"),
    };
    let amount = |a: budget::account::Amount| serde_json::json!({"tokens": a.tokens, "cost": format_money(a.cost)});
    let remaining = c.limit.room(s.committed());
    serde_json::json!({
        "budget": c.budget,
        "counter": c.key,
        "window": window,
        "enforcement": if c.hard { "hard" } else { "soft" },
        "limit": {"tokens": c.limit.tokens, "cost": c.limit.cost.map(format_money)},
        "spent": amount(s.spent),
        "reserved": amount(s.reserved),
        "remaining": {
            "tokens": c.limit.tokens.map(|_| remaining.tokens),
            "cost": c.limit.cost.map(|_| format_money(remaining.cost)),
        },
        "resetsInSeconds": budget::account::retry_after(c, s, now),
    })
}

/// The audit event and metrics of one call.
#[allow(clippy::too_many_arguments)]
fn write_record(
    audit: Option<&AuditLog>,
    metrics: &Metrics,
    portal: &str,
    caller: Dialect,
    subject: &str,
    rec: &Record,
    outcome: Outcome,
    reason: Option<String>,
    started: Instant,
) {
    let elapsed = started.elapsed();
    let outcome_label = match outcome {
        Outcome::Allow => "ok",
        Outcome::Deny => "denied",
        Outcome::Block => "blocked",
        Outcome::Error => "error",
    };
    metrics
        .llm
        .requests
        .get_or_create(&LlmLabels {
            model: rec.alias.clone(),
            provider: rec.provider.clone(),
            outcome: outcome_label.into(),
        })
        .inc();
    if let Some(u) = rec.usage {
        for (kind, n) in [("input", u.input), ("output", u.output)] {
            metrics
                .llm
                .token_usage
                .get_or_create(&TokenLabels {
                    model: rec.alias.clone(),
                    provider: rec.provider.clone(),
                    token_type: kind.into(),
                })
                .observe(n as f64);
        }
    }
    if let Some(u) = rec.usage {
        for (kind, n) in [
            ("input", u.input),
            ("output", u.output),
            ("cached_input", u.cached),
        ] {
            metrics
                .llm
                .tokens
                .get_or_create(&TokensLabels {
                    portal: portal.to_owned(),
                    model: rec.alias.clone(),
                    provider: rec.provider.clone(),
                    token_type: kind.into(),
                    outcome: outcome_label.into(),
                })
                .inc_by(n);
        }
    }
    if let Some(c) = rec.cost.filter(|c| *c > 0) {
        metrics
            .llm
            .cost
            .get_or_create(&SpendLabels {
                portal: portal.to_owned(),
                model: rec.alias.clone(),
                provider: rec.provider.clone(),
                outcome: outcome_label.into(),
            })
            .inc_by(c as f64 / crds::budget::NANOS_PER_UNIT as f64);
    }
    if outcome == Outcome::Allow {
        metrics
            .llm
            .duration
            .get_or_create(&LlmLabels {
                model: rec.alias.clone(),
                provider: rec.provider.clone(),
                outcome: outcome_label.into(),
            })
            .observe(elapsed.as_secs_f64());
    }
    for (detector, action) in &rec.findings.actions {
        let action = match action {
            crds::policy::DlpAction::Log => "log",
            crds::policy::DlpAction::Redact => "redact",
            crds::policy::DlpAction::Block => "block",
        };
        metrics
            .dlp_findings
            .get_or_create(&crate::metrics::DlpLabels {
                detector: (*detector).to_owned(),
                action: action.into(),
            })
            .inc();
    }
    if let (Some(o), Outcome::Allow) = (rec.overhead, outcome) {
        metrics
            .llm
            .overhead
            .get_or_create(&crate::metrics::OverheadLabels {
                model: rec.alias.clone(),
                provider: rec.provider.clone(),
                stream: rec.stream.to_string(),
            })
            .observe(o.as_secs_f64());
    }
    let Some(log) = audit else { return };
    log.log(Event {
        portal: portal.to_owned(),
        subject: subject.to_owned(),
        method: caller.method().into(),
        decision: outcome,
        reason,
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        detectors: rec.findings.detectors.clone(),
        llm: Some(LlmCall {
            model: rec.alias.clone(),
            provider: (!rec.provider.is_empty()).then(|| rec.provider.clone()),
            provider_model: (!rec.target_model.is_empty()).then(|| rec.target_model.clone()),
            stream: rec.stream,
            attempts: rec.attempts,
            failures: rec.failures.clone(),
            input_tokens: rec.usage.map(|u| u.input),
            output_tokens: rec.usage.map(|u| u.output),
            cached_tokens: rec.usage.map(|u| u.cached),
            cost: rec.cost.map(crds::budget::format_money),
            estimated: rec.estimated,
        }),
        ..Default::default()
    });
}

/// The Chat Completions event stream `resp` (from [`Gateway::call`]) as the Responses API's
/// event stream.
fn responses_stream(resp: Response) -> Response {
    use futures::StreamExt;
    let body = resp.into_body().into_data_stream();
    let state = (
        body,
        sse::Decoder::new(stream::MAX_EVENT_BYTES),
        responses::StreamToResponses::default(),
        false,
    );
    let events = futures::stream::unfold(
        state,
        |(mut body, mut dec, mut conv, ended)| async move {
            if ended {
                return None;
            }
            let mut out = Vec::new();
            let mut evs = Vec::new();
            loop {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        if dec.feed(&chunk, &mut evs).is_err() {
                            conv.data(
                            &serde_json::json!({"error": {"message": "the stream could not be read", "code": null}}).to_string(),
                            &mut out,
                        );
                        }
                        for ev in evs.drain(..) {
                            conv.data(&ev.data, &mut out);
                        }
                        if conv.finished() || !out.is_empty() {
                            let fin = conv.finished();
                            return Some((
                                Ok::<_, std::convert::Infallible>(Bytes::from(out)),
                                (body, dec, conv, fin),
                            ));
                        }
                    }
                    Some(Err(_)) | None => {
                        if !conv.finished() {
                            conv.data(
                            &serde_json::json!({"error": {"message": "the stream ended early", "code": null}}).to_string(),
                            &mut out,
                        );
                        }
                        return Some((Ok(Bytes::from(out)), (body, dec, conv, true)));
                    }
                }
            }
        },
    );
    let mut out = (StatusCode::OK, axum::body::Body::from_stream(events)).into_response();
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out
}

/// A provider's bytes as they came, as JSON.
fn raw(status: u16, body: Bytes) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        body,
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn no_gateway(dialect: Dialect) -> Response {
    error(
        dialect,
        404,
        "this portal has no LLM gateway (its McpPortal sets no spec.llm)",
    )
}

/// The request each target of `route` is sent: the caller's with the target's model (and,
/// for an OpenAI stream, usage asked for), or its translation.
fn provider_bodies(
    caller: Dialect,
    req: &Value,
    route: &LlmRouteConfig,
) -> Result<Vec<Value>, translate::Untranslatable> {
    let mut out = Vec::new();
    for t in &route.targets {
        let target = provider::dialect(t.provider);
        let mut body = match (caller, target) {
            (Dialect::OpenAi, Dialect::Anthropic) => {
                translate::openai_request_to_anthropic(req, &t.model)?
            }
            (Dialect::Anthropic, Dialect::OpenAi) => {
                translate::anthropic_request_to_openai(req, &t.model)?
            }
            _ => {
                let mut b = req.clone();
                b["model"] = Value::String(t.model.clone());
                b
            }
        };
        if target == Dialect::OpenAi && body.get("stream").and_then(Value::as_bool) == Some(true) {
            // Usage is always asked for; the relay drops the extra chunk when the caller did
            // not ask for it. The caller's other stream options stay.
            match body
                .get_mut("stream_options")
                .and_then(Value::as_object_mut)
            {
                Some(o) => {
                    o.insert("include_usage".into(), Value::Bool(true));
                }
                None => body["stream_options"] = serde_json::json!({"include_usage": true}),
            }
        }
        out.push(body);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LlmTargetConfig, PortalConfig};
    use crds::McpPortalSpec;
    use crds::llm::{LlmProvider, LlmStrategy};

    fn config(policies: serde_json::Value) -> PortalConfig {
        let policies: Vec<McpPolicy> = policies
            .as_array()
            .unwrap()
            .iter()
            .map(|p| McpPolicy::new("p", serde_json::from_value(p.clone()).unwrap()))
            .collect();
        PortalConfig {
            name: "p".into(),
            spec: McpPortalSpec::default(),
            servers: vec![],
            policies,
            session_key: None,
            audit_key: None,
            max_body_bytes: 1024,
            pins: Default::default(),
            identity_key: None,
            llm: Some(LlmConfig {
                routes: vec![LlmRouteConfig {
                    alias: "fast".into(),
                    strategy: LlmStrategy::Failover,
                    targets: vec![
                        LlmTargetConfig {
                            provider: LlmProvider::OpenAiCompatible,
                            base_url: "http://x/v1".into(),
                            model: "g".into(),
                            api_key: None,
                            weight: 1,
                            timeout: std::time::Duration::from_secs(1),
                            price: None,
                        },
                        LlmTargetConfig {
                            provider: LlmProvider::Anthropic,
                            base_url: "http://y".into(),
                            model: "c".into(),
                            api_key: None,
                            weight: 1,
                            timeout: std::time::Duration::from_secs(1),
                            price: None,
                        },
                    ],
                }],
                budget_store: Default::default(),
            }),
            rate_limit_store: None,
        }
    }

    #[test]
    fn only_a_policy_covering_the_caller_with_a_matching_model_glob_grants_an_alias() {
        let state = State::of(&config(serde_json::json!([
            {"subjects": [{"group": "finance"}], "models": ["fa*"]},
            {"subjects": [{"group": "sales"}], "rules": [{"access": "read"}]},
            {"models": ["open-*"]}
        ])));
        let alice = Identity::user("alice", ["finance"]);
        let carol = Identity::user("carol", ["sales"]);
        assert!(state.may_use(&alice, "fast"));
        assert!(!state.may_use(&alice, "slow"));
        assert!(!state.may_use(&carol, "fast"), "tool rules grant no model");
        // A policy without subjects covers every authenticated caller, never nobody.
        assert!(state.may_use(&carol, "open-1"));
        assert!(!state.may_use(&Identity::nobody(), "open-1"));
    }

    #[test]
    fn each_target_gets_its_own_model_and_a_translation_when_it_speaks_the_other_api() {
        let cfg = config(serde_json::json!([]));
        let route = &cfg.llm.as_ref().unwrap().routes[0];
        let req = serde_json::json!({"model": "fast", "stream": true,
            "stream_options": {"include_obfuscation": false},
            "messages": [{"role": "user", "content": "hi"}]});
        let bodies = provider_bodies(Dialect::OpenAi, &req, route).unwrap();
        assert_eq!(bodies[0]["model"], "g");
        assert_eq!(
            bodies[0]["stream_options"],
            serde_json::json!({"include_obfuscation": false, "include_usage": true})
        );
        assert_eq!(bodies[1]["model"], "c");
        assert_eq!(bodies[1]["max_tokens"], translate::DEFAULT_MAX_TOKENS);
        assert!(bodies[1].get("stream_options").is_none());
        // A field one target cannot take refuses the request whoever would serve it.
        let mut n2 = req.clone();
        n2["n"] = serde_json::json!(2);
        assert!(provider_bodies(Dialect::OpenAi, &n2, route).is_err());
    }
}

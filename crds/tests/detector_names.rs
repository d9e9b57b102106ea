//! The detector names are written out for people in two places: the README's configuration
//! reference and the `detectors` field's doc (`kubectl explain mcppolicy.spec.dlp.detectors`).
//! Both must list exactly the [`crds::Detector`] enum, in its order.

use crds::Detector;

/// The backticked names of `text` from `start` up to `end`.
fn names_between(text: &str, start: &str, end: &str) -> Vec<String> {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not found"));
    let rest = &text[from + start.len()..];
    let to = rest
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not found"));
    rest[..to]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn enum_names() -> Vec<String> {
    Detector::ALL.iter().map(|d| d.id().to_owned()).collect()
}

#[test]
fn the_readme_configuration_reference_lists_exactly_the_detector_enum() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    assert_eq!(
        names_between(&readme, "DLP detectors:", "plus custom `patterns`"),
        enum_names()
    );
}

#[test]
fn the_detectors_field_doc_lists_exactly_the_detector_enum() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(crds::McpPolicy::crd()).unwrap();
    let detectors = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["dlp"]["items"]["properties"]["detectors"];
    let doc = detectors["description"].as_str().expect("a description");
    assert_eq!(names_between(doc, "by name:", "."), enum_names(), "{doc}");
}

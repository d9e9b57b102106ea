//! The committed CRD YAML matches the types. Regenerate with `make generate`.

const FILES: &[&str] = &[
    "portcullis.dev_crds.yaml",
    "../charts/portcullis/crds/portcullis.dev_crds.yaml",
];

#[test]
fn committed_crd_yaml_matches_the_types() {
    let want = crds::crds_yaml();
    for f in FILES {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        // `CRDS_BLESS=1 cargo test --workspace --test generated_yaml` rewrites the files (what
        // `make generate` does) without a crds-only build.
        if std::env::var_os("CRDS_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date with crds/src: run `make generate` and commit the result",
            path.display()
        );
    }
}

#[test]
fn every_crd_field_has_a_description() {
    // `kubectl explain` text comes from the doc comments; a field without one is a bug.
    fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (k, child) in props {
                let p = format!("{path}.{k}");
                let is_meta = path.ends_with(".metadata")
                    || k == "metadata"
                    || k == "apiVersion"
                    || k == "kind";
                if child.get("description").is_none() && !is_meta {
                    missing.push(p.clone());
                }
                walk(&p, child, missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in crds::crds() {
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(&version.schema).unwrap();
            walk(
                &crd.spec.names.kind,
                &schema["openAPIV3Schema"],
                &mut missing,
            );
        }
    }
    // LabelSelector's and ResourceRequirements' inner fields come from k8s-openapi and carry
    // upstream descriptions; anything else must be ours.
    assert!(
        missing.is_empty(),
        "fields without a doc comment: {missing:#?}"
    );
}

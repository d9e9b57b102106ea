//! Prints the Portcullis CustomResourceDefinitions as multi-document YAML.
fn main() {
    print!("{}", crds::crds_yaml());
}

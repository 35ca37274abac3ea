//! Generates plinth.v1 messages (with serde, in the resource's camelCase shape) and the
//! PlatformService client and server. protox parses the files: no protoc needed.

const SERDE: &str = "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\", default, deny_unknown_fields)]";

const SKIP_EMPTY: &str = "#[serde(skip_serializing_if = \"String::is_empty\")]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "plinth/v1/namespace.proto",
        "plinth/v1/metrics_target.proto",
        "plinth/v1/policy.proto",
        "plinth/v1/platform.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .type_attribute(".plinth.v1", SERDE)
        // A rule sets one of its fields; the others stay out of YAML and JSON.
        .field_attribute(".plinth.v1.Rule", SKIP_EMPTY)
        // Only access given on request ends by itself.
        .field_attribute(".plinth.v1.AccessGrant.expires", SKIP_EMPTY)
        .field_attribute(".plinth.v1.AccessGrant.request", SKIP_EMPTY)
        .compile_fds(descriptors)?;
    Ok(())
}

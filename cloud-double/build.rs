//! Generates the CloudService server from the descriptor set temporalio-protos publishes, so
//! the double serves exactly the contract the client in temporalio-client speaks; every
//! message is temporalio-common's.

use prost::Message;

const SERVICE_FILE: &str = "temporal/api/cloud/cloudservice/v1/service.proto";

fn main() {
    let path = std::env::var("DEP_TEMPORALIO_PROTOS_DESCRIPTOR_PATH")
        .expect("temporalio-protos publishes its descriptor set");
    println!("cargo:rerun-if-changed={path}");
    let bytes = std::fs::read(&path).expect("read the descriptor set");
    let mut set = prost_types::FileDescriptorSet::decode(bytes.as_slice())
        .expect("decode the descriptor set");
    set.file.retain(|file| file.name() == SERVICE_FILE);
    assert_eq!(set.file.len(), 1, "{SERVICE_FILE} is in the descriptor set");
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        .generate_default_stubs(true)
        .extern_path(".temporal", "::temporalio_common::protos::temporal")
        .compile_fds(set)
        .expect("generate the CloudService server");
}

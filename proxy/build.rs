//! Keeps the descriptor set of the SDK's protos: the schema of where payloads are, and the test
//! that checks the RPC table, read it.

fn main() {
    let descriptors = std::env::var("DEP_TEMPORALIO_PROTOS_DESCRIPTOR_PATH")
        .expect("temporalio-protos publishes its descriptor set");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::copy(&descriptors, out.join("temporal-descriptors.bin"))
        .expect("copy the descriptor set");
    println!("cargo:rerun-if-changed={descriptors}");
}

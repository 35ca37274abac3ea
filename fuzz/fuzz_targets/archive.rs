//! What Plinth reads back from object storage, where anyone with write access to the bucket
//! may have put anything: audit batches, export objects and their indexes.
#![no_main]
use std::sync::LazyLock;

static ARCHIVE: LazyLock<plinth_archive::Archive> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("plinth-fuzz-archive-{}", std::process::id()));
    plinth_archive::Archive::open(&format!("file://{}", dir.display()))
        .expect("an archive in the temp dir")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = plinth_archive::audit::decode(&ARCHIVE, "fuzz", data);
    let _ = plinth_archive::history::listed_items(data, "fuzz");
    let _ = plinth_archive::history::item(data, 0);
    let _ = plinth_archive::history::decode_index(&ARCHIVE, "fuzz", data);
});

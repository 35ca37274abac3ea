//! A key encryption key rotated while two proxies of one platform carry traffic: real
//! `plinth` processes on a Temporal dev server, workflows started through each proxy without
//! pause. Both pick the new key up without a restart, and no call fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use plinth_test_harness::cli::{ok, temporal_as, text, wait_for};
use plinth_test_harness::sealed::active_key;
use plinth_test_harness::{DevServer, PAYMENTS_MEMBER, PlinthStack};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

#[test]
fn a_key_rotated_under_load_through_two_proxies_is_used_by_both_and_no_call_fails() {
    let mut stack =
        PlinthStack::start_with(DevServer::shared(), PLINTH.as_ref(), "10m", "3s").unwrap();
    let ns = format!("rotating-{}", std::process::id());
    stack.provision_for_team("rotating", &ns).unwrap();
    let first = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let second_address = stack.start_another_proxy().unwrap().address;
    let second = first.with_file_name("second-proxy.toml");
    let profile = std::fs::read_to_string(&first).unwrap();
    std::fs::write(
        &second,
        profile.replace(&stack.proxy_address, &second_address),
    )
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    // Each proxy's calls in turn, counted as they succeed; the first failure ends its loop.
    let load = |name: &'static str, profile: std::path::PathBuf| {
        let (stop, done) = (stop.clone(), Arc::new(AtomicUsize::new(0)));
        let counted = done.clone();
        let calls = std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let id = format!("{name}-{}", counted.load(Ordering::Relaxed));
                let args = [
                    "workflow",
                    "start",
                    "--type",
                    "Rotating",
                    "--task-queue",
                    "nobody",
                    "--input",
                    "\"card-4111\"",
                ];
                let out = temporal_as(&profile, &[&args[..], &["-w", &id]].concat());
                if !out.status.success() {
                    return Err(format!("{id} failed: {}", text(&out)));
                }
                counted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        (calls, done)
    };
    let (through_first, first_done) = load("first", first);
    let (through_second, second_done) = load("second", second);
    // The key the newest call through a proxy was sealed under.
    let newest = |name: &str, done: &AtomicUsize| match done.load(Ordering::Relaxed) {
        0 => String::new(),
        n => stack.stored_key_id(&ns, &format!("{name}-{}", n - 1)),
    };

    let before = active_key(&stack);
    wait_for("calls through both proxies", || {
        newest("first", &first_done) == before && newest("second", &second_done) == before
    });
    let rotated = ok(stack.plinth(&["keys", "rotate"]));
    let after = active_key(&stack);
    assert_ne!(before, after, "{}", text(&rotated));
    let calls_at_rotation =
        first_done.load(Ordering::Relaxed) + second_done.load(Ordering::Relaxed);
    wait_for("both proxies to seal with the new key", || {
        newest("first", &first_done) == after && newest("second", &second_done) == after
    });
    stop.store(true, Ordering::Relaxed);
    for (proxy, calls) in [("first", through_first), ("second", through_second)] {
        calls
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("through the {proxy} proxy: {e}"));
    }
    let calls = first_done.load(Ordering::Relaxed) + second_done.load(Ordering::Relaxed);
    assert!(
        calls > calls_at_rotation,
        "calls went on across the rotation"
    );
}

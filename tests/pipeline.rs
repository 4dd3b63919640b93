//! `tracer pipeline` (what `cargo xtask bench events` measures): every getppid() of the traced
//! process arrives once, none lost.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use tracer_tests::Tracer;

#[test]
fn every_call_of_the_traced_process_arrives_once() {
    const CALLS: u32 = 300_000;
    // Waits for a line, then makes exactly CALLS getppid() calls.
    let script =
        format!("import os, sys\nsys.stdin.readline()\nfor _ in range({CALLS}): os.getppid()\n");
    let mut caller = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = caller.id().to_string();
    let tracer = Tracer::start(&["pipeline", "--json", "-p", &pid]);
    // Another process calling getppid() at the same time must not count.
    let other = Command::new("python3")
        .args([
            "-c",
            &format!("import os\nfor _ in range({CALLS}): os.getppid()\n"),
        ])
        .spawn()
        .unwrap();
    writeln!(caller.stdin.take().unwrap()).unwrap();
    assert!(caller.wait().unwrap().success());
    assert!(other.wait_with_output().unwrap().status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let finished = tracer.stop();
    finished.assert_success();
    let summary = &finished.json_of_type("summary")[0];
    assert_eq!(summary["events"], CALLS, "{finished:#?}");
    assert_eq!(summary["lost"], 0);
}

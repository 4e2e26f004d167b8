//! A real `fleetgate-agent run` process whose state directory's outbox folder holds files it
//! must not trust: a FIFO, a socket, a symbolic link, an oversized file, a file with a line over
//! the line limit, a garbage file and a torn one, next to a good outbox. Its coordinator accepts
//! the connection and never answers. The agent starts, says in one line per file what it
//! skipped and why, resumes the good events, leaves every file where it is, and stops within a
//! bounded wait on SIGTERM while its session waits for the coordinator, and on SIGINT as soon
//! as it has read its outboxes (its start still under way, or not).

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use support::{Process, agent_command};

const STARTED: &str = r#"{"sequence":1,"update":{"event":"started","pid":7}}"#;

/// The outbox folder's contents; returns each path and the line the agent must say about it.
fn hostile_outbox(outbox: &Path) -> Vec<(PathBuf, String)> {
    std::fs::create_dir_all(outbox).unwrap();
    let path = |name: &str| outbox.join(name);
    let skipped = |p: &Path, reason: &str| {
        format!("Outbox file skipped. path={} reason={reason}", p.display())
    };
    let mut expected = Vec::new();

    let fifo = path("job-fifo.events.jsonl");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    expected.push((fifo.clone(), skipped(&fifo, "a FIFO, not a regular file")));

    let socket = path("job-socket.events.jsonl");
    // The listener is dropped; its socket file stays.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    expected.push((
        socket.clone(),
        skipped(&socket, "a socket, not a regular file"),
    ));

    let target = outbox.parent().unwrap().join("elsewhere.jsonl");
    std::fs::write(&target, format!("{STARTED}\n")).unwrap();
    let link = path("job-link.events.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    expected.push((
        link.clone(),
        skipped(&link, "a symbolic link, not a regular file"),
    ));

    let big = path("job-big.events.jsonl");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 * 1024 * 1024 + 1)
        .unwrap();
    expected.push((
        big.clone(),
        skipped(
            &big,
            "67108865 bytes, over the 64 MiB limit for one outbox file",
        ),
    ));

    // A 17 MiB line, then a good event: the line is skipped, the event kept.
    let long = path("job-long.events.jsonl");
    let mut file = std::fs::File::create(&long).unwrap();
    file.write_all(&vec![b'x'; 17 * 1024 * 1024]).unwrap();
    writeln!(file, "\n{STARTED}").unwrap();
    drop(file);
    expected.push((
        long.clone(),
        format!(
            "Outbox lines skipped. path={} reason=1 line(s) over the 16 MiB line limit",
            long.display()
        ),
    ));

    let garbage = path("job-garbage.events.jsonl");
    std::fs::write(&garbage, "garbage\n{\"sequence\":\"two\"}\n\u{0}\u{1}\n").unwrap();
    expected.push((
        garbage.clone(),
        skipped(&garbage, "no readable event (3 unreadable line(s) skipped)"),
    ));

    let torn = path("job-torn.events.jsonl");
    std::fs::write(&torn, r#"{"sequence":1,"upd"#).unwrap();
    expected.push((torn.clone(), skipped(&torn, "no readable event")));

    let misnamed = path("notes.txt");
    std::fs::write(&misnamed, "operator notes\n").unwrap();
    expected.push((
        misnamed.clone(),
        skipped(
            &misnamed,
            "not an outbox file (<job id>.events.jsonl, the id made of letters, digits, '-', '_' or '.')",
        ),
    ));

    let good = path("job-good.events.jsonl");
    std::fs::write(&good, format!("{STARTED}\n")).unwrap();
    expected.push((
        good.clone(),
        "Resuming unacknowledged job events. job_id=job-good events=1".to_owned(),
    ));
    expected
}

/// Starts the agent on `state`, dialling `coordinator`, logging at `info`.
fn start_agent(coordinator: &str, state: &Path, artifacts: &Path) -> Process {
    let mut command = agent_command();
    command
        .arg("run")
        .args(["--coordinator", coordinator, "--plaintext"])
        .args(["--agent-id", "outbox-test", "--reconnect-max-ms", "300"])
        .arg("--state-dir")
        .arg(state)
        .arg("--artifact-root")
        .arg(artifacts)
        .env("FLEETGATE_LOG", "info");
    Process::spawn(command)
}

/// Starts the agent on a hostile outbox folder and waits for its lines (with `in_session`,
/// also for its start to end, so the signal finds it waiting on the silent coordinator), then
/// sends `signal`.
fn hostile_outbox_then(signal: Signal, in_session: bool) {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let expected = hostile_outbox(&state.join("outbox"));
    // A coordinator that accepts connections and never answers: the agent's session waits.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let mut agent = start_agent(&url, &state, &work.path().join("artifacts"));

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !expected
        .iter()
        .all(|(_, want)| seen.iter().any(|l: &String| l.ends_with(want.as_str())))
    {
        match agent.next_line(deadline) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "the agent did not say what it skipped; missing {:#?}\nstderr:\n{}",
                expected
                    .iter()
                    .filter(|(_, want)| !seen.iter().any(|l| l.ends_with(want.as_str())))
                    .map(|(_, want)| want)
                    .collect::<Vec<_>>(),
                seen.join("\n")
            ),
        }
    }
    if in_session {
        while !seen
            .iter()
            .any(|l| l.contains("Agent starting. agent_id=outbox-test"))
        {
            let line = agent
                .next_line(deadline)
                .unwrap_or_else(|_| panic!("the agent never started:\n{}", seen.join("\n")));
            seen.push(line);
        }
    }
    // One line per file, each said once.
    for (path, _) in &expected {
        let about = format!("path={} ", path.display());
        let count = seen.iter().filter(|l| l.contains(&about)).count();
        assert!(
            count <= 1,
            "{} named {count} times:\n{}",
            path.display(),
            seen.join("\n")
        );
    }

    agent.signal(signal);
    let status = agent.wait_exit(Duration::from_secs(10));
    let rest = agent.lines_so_far();
    let status = status.unwrap_or_else(|| {
        panic!(
            "the agent ignored {signal:?} for 10 s:\n{}\n{}",
            seen.join("\n"),
            rest.join("\n")
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "{}\n{}",
        seen.join("\n"),
        rest.join("\n")
    );
    // Nothing skipped was removed or changed; the long line's file kept its good event.
    for (path, _) in &expected {
        assert!(
            std::fs::symlink_metadata(path).is_ok(),
            "{} was removed",
            path.display()
        );
    }
    drop(silent);
}

#[test]
fn hostile_outbox_files_are_skipped_with_a_line_each_and_sigterm_still_stops_the_agent() {
    hostile_outbox_then(Signal::TERM, true);
}

#[test]
fn hostile_outbox_files_are_skipped_with_a_line_each_and_sigint_still_stops_the_agent() {
    hostile_outbox_then(Signal::INT, false);
}

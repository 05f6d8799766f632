//! The command line of the real binary: what each flag accepts, what it
//! refuses and how, and that the help and the README agree.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;
use support::{Finished, Server, Ws, run_to_exit, spawn_listening, wsgate};

/// `wsgate` with `args` (a mode first, or none for the default), run to
/// its end. Should a refusal fail to happen, it would listen on ephemeral
/// loopback ports with a database in `dir`, not on the defaults.
fn refused(dir: &tempfile::TempDir, args: &[&str]) -> Finished {
    let mode = args.first().copied().filter(|a| !a.starts_with('-'));
    let mut safe = vec![];
    if mode != Some("proxy") {
        safe.push(("--db", dir.path().join("chat.db").display().to_string()));
        safe.push(("--grpc-listen", "127.0.0.1:0".to_owned()));
    }
    if mode != Some("server") {
        safe.push(("--listen", "127.0.0.1:0".to_owned()));
    }
    let mut command = wsgate();
    command.args(args);
    for (flag, value) in safe {
        if !args.contains(&flag) {
            command.args([flag, &value]);
        }
    }
    run_to_exit(command)
}

/// A flag error: clap's exit status 2, one `error:` line naming the flag,
/// and nothing started.
fn assert_flag_error(finished: &Finished, flag: &str, reason: &str) {
    assert_eq!(finished.status.code(), Some(2), "{finished:?}");
    let error = finished
        .stderr
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {finished:?}"));
    assert!(error.contains(flag), "{error}");
    assert!(error.contains(reason), "{error}");
    assert!(!finished.stderr.contains("listening"), "{finished:?}");
}

#[tokio::test]
async fn a_bare_upstream_address_is_taken_as_http() {
    let server = Server::start().await;
    let mut proxy = wsgate();
    proxy.args([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        // No scheme, and a name rather than an address.
        &format!("localhost:{}", server.addr.port()),
    ]);
    let proxy = spawn_listening(proxy, "WebSocket gateway listening");

    let mut ws = Ws::connect(&format!("ws://{}/", proxy.addr)).await;
    let set = ws
        .call(
            "set_user_name",
            json!({"user_id": "ada", "name": "Ada Lovelace"}),
        )
        .await;
    assert_eq!(set["user"]["name"], "Ada Lovelace", "{set}");
    let got = ws.call("get_user", json!({"user_id": "ada"})).await;
    assert_eq!(got["user"]["name"], "Ada Lovelace", "{got}");

    ws.close().await;
    proxy.kill();
    server.stop().await;
}

#[test]
fn an_upstream_other_than_http_or_https_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    for (upstream, reason) in [
        ("grpc://127.0.0.1:50051", "scheme \"grpc\" is not supported"),
        ("http://127.0.0.1:50051/api", "without a path"),
        (
            "http://",
            "expected http://HOST:PORT, https://HOST:PORT or HOST:PORT",
        ),
    ] {
        let finished = refused(&dir, &["proxy", "--upstream", upstream]);
        assert_flag_error(&finished, "--upstream", reason);
    }
}

/// `wsgate` (gateway and chat server in one process) on ephemeral loopback
/// ports, with its database in `dir`.
fn all_on_loopback(dir: &tempfile::TempDir) -> Command {
    let mut command = wsgate();
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(dir.path().join("chat.db"));
    command
}

#[tokio::test]
async fn listen_addresses_may_be_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = wsgate();
    all.args([
        "--listen",
        "localhost:0",
        "--grpc-listen",
        "localhost:0",
        "--db",
    ])
    .arg(dir.path().join("chat.db"));
    let all = spawn_listening(all, "WebSocket gateway listening");
    // The log says which address the name gave.
    assert!(
        all.log
            .iter()
            .any(|line| line.contains("resolved") && line.contains("localhost:0")),
        "{:?}",
        all.log
    );
    assert!(all.addr.ip().is_loopback(), "{}", all.addr);

    let mut ws = Ws::connect(&format!("ws://{}/", all.addr)).await;
    let echo = ws.say("r", "u", "m1", "hello").await;
    assert_eq!(echo["seq"], "1");
    ws.close().await;
    all.kill();
}

/// A log nobody reads any more (stderr a pipe whose reader went away, as
/// when journald restarts) costs those lines and nothing else: chat goes
/// on, and SIGTERM still ends the process gracefully. (tracing-subscriber
/// reported a failed write with eprintln!, which panicked on the same dead
/// stderr: sessions died at their first log line, and so did the shutdown.)
#[tokio::test]
async fn a_dead_log_pipe_stops_neither_chat_nor_a_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = all_on_loopback(&dir);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn wsgate");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("WebSocket gateway listening"))
        .and_then(|line| support::listen_addr(&line))
        .expect("a listening line");
    drop(lines); // from now on every write to its stderr fails (EPIPE)

    let mut ws = Ws::connect(&format!("ws://{addr}/")).await; // a "connect" line
    let echo = ws.say("r", "u", "m1", "hello").await;
    assert_eq!(echo["seq"], "1");

    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.expect("run kill").success());
    assert_eq!(
        ws.closed_with().await,
        1001,
        "closed as in a graceful shutdown"
    );
    let exited = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(support::WAIT, exited)
        .await
        .expect("it exits after SIGTERM")
        .expect("the waiting thread")
        .expect("wait");
    assert!(status.success(), "{status}");
}

/// What `wsgate` logs of one chat (a message said, then a close
/// handshake) at the level RUST_LOG gives.
async fn log_of_one_chat(rust_log: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut command = all_on_loopback(&dir);
    command.env("RUST_LOG", rust_log);
    let all = spawn_listening(command, "WebSocket gateway listening");
    let mut ws = Ws::connect(&format!("ws://{}/", all.addr)).await;
    let echo = ws.say("r", "u", "m1", "hello").await;
    assert_eq!(echo["seq"], "1");
    // The gateway has logged the close frame before it answered it.
    ws.hang_up().await;
    all.kill_and_read_log()
}

/// The WebSocket library's levels are capped, not raised: at `info` it logs
/// nothing (it logs every close handshake at debug, which the cap once set
/// it to), and at `trace` no more than debug (its trace lines hold whole
/// frames: tokens and messages).
#[tokio::test]
async fn the_websocket_library_logs_at_most_debug_and_nothing_at_info() {
    let from_library = |log: &[String], level: &str| {
        log.iter()
            .filter(|line| line.contains("tungstenite") && line.contains(level))
            .count()
    };
    let info = log_of_one_chat("info").await;
    assert!(
        info.iter().any(|line| line.contains("disconnect")),
        "{info:#?}"
    );
    assert!(
        info.iter().all(|line| !line.contains("tungstenite")),
        "{info:#?}"
    );
    let trace = log_of_one_chat("trace").await;
    assert!(from_library(&trace, " DEBUG ") > 0, "{trace:#?}");
    assert_eq!(from_library(&trace, " TRACE "), 0, "{trace:#?}");
}

#[test]
fn listen_addresses_that_are_not_host_and_port_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (listen, reason) in [
        ("8080", "no port"),
        ("localhost:http", "is not a port"),
        (":8080", "no host"),
        ("::1:8080", "an IPv6 address goes in brackets, [::1]:8080"),
        ("[localhost]:8080", "is not an IPv6 address"),
    ] {
        let finished = refused(&dir, &["--listen", listen]);
        assert_flag_error(&finished, "--listen", reason);
        let finished = refused(&dir, &["server", "--grpc-listen", listen]);
        assert_flag_error(&finished, "--grpc-listen", reason);
    }
}

#[test]
fn boolean_variables_take_the_usual_spellings() {
    let dir = tempfile::tempdir().unwrap();
    for (value, fsync) in [
        ("1", true),
        ("yes", true),
        ("on", true),
        ("true", true),
        ("0", false),
        ("no", false),
        ("off", false),
        ("false", false),
    ] {
        let mut server = wsgate();
        server
            .args(["server", "--grpc-listen", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("chat.db"))
            .env("WSGATE_FSYNC", value);
        let server = spawn_listening(server, "gRPC chat server listening");
        let expected = format!("fsync={fsync}");
        assert!(
            server
                .log
                .iter()
                .any(|line| line.contains("storage ready") && line.contains(&expected)),
            "WSGATE_FSYNC={value}: {:?}",
            server.log
        );
        server.kill();
    }

    let mut maybe = wsgate();
    maybe
        .args(["server", "--grpc-listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("chat.db"))
        .env("WSGATE_FSYNC", "maybe");
    assert_flag_error(&run_to_exit(maybe), "--fsync", "maybe");
}

#[test]
fn counts_of_zero_are_refused_not_rounded_up() {
    let dir = tempfile::tempdir().unwrap();
    for flag in [
        "--max-content-bytes",
        "--stream-buffer",
        "--max-frame-bytes",
        "--ping-interval",
        "--outbound-queue",
        "--upstream-connections",
    ] {
        let finished = refused(&dir, &[flag, "0"]);
        assert_flag_error(&finished, flag, "must be at least 1");
    }
    // From the environment too.
    let mut command = wsgate();
    command
        .args(["server", "--grpc-listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("chat.db"))
        .env("WSGATE_STREAM_BUFFER", "0");
    assert_flag_error(
        &run_to_exit(command),
        "--stream-buffer",
        "must be at least 1",
    );
}

/// Values that would overflow or exhaust memory later (a panic in a timer
/// or a channel) are refused up front as well.
#[test]
fn counts_too_large_to_work_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, reason) in [
        (
            "--ping-interval",
            "18446744073709551615",
            "must be at most 86400",
        ),
        (
            "--stream-buffer",
            "4611686018427387904",
            "must be at most 1048576",
        ),
        (
            "--outbound-queue",
            "4611686018427387904",
            "must be at most 1048576",
        ),
        (
            "--upstream-connections",
            "1000000000",
            "must be at most 1024",
        ),
        ("--max-frame-bytes", "-1", "invalid digit"),
    ] {
        let finished = refused(&dir, &[&format!("{flag}={value}")]);
        assert_flag_error(&finished, flag, reason);
    }
}

#[test]
fn an_expected_failure_prints_its_message_and_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut server = wsgate();
    server
        .args(["server", "--grpc-listen", &addr, "--db"])
        .arg(dir.path().join("chat.db"))
        .env("RUST_BACKTRACE", "1");
    let finished = run_to_exit(server);

    assert_eq!(finished.status.code(), Some(1), "{finished:?}");
    let last = finished.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("error: cannot listen on {addr}: ")),
        "{finished:?}"
    );
    assert!(last.contains("in use"), "{last}");
    assert_eq!(finished.stderr.matches("error:").count(), 1, "{finished:?}");
    assert!(
        !finished.stderr.to_lowercase().contains("backtrace"),
        "{finished:?}"
    );
}

/// The flags a help text names, without --help and --version: in the
/// options' own lines, and in the note on the gateway's own flags.
fn help_flags(args: &[&str]) -> (String, BTreeSet<String>) {
    let mut command = wsgate();
    command.args(args).arg("--help");
    let finished = run_to_exit(command);
    assert!(finished.status.success(), "{finished:?}");
    let flags = finished
        .stdout
        .lines()
        .map(str::trim_start)
        .flat_map(|line| {
            if line.starts_with('-') {
                // `-h, --help`, `--db <DB>  SQLite file...`: the first only.
                flags_in(line).into_iter().take(1).collect()
            } else if line.starts_with("`wsgate proxy`") {
                flags_in(line)
            } else {
                Vec::new()
            }
        })
        .filter(|flag| flag != "--help" && flag != "--version")
        .collect();
    (finished.stdout, flags)
}

/// The `--flag` words of `text`, in order.
fn flags_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(str::to_owned)
        .collect()
}

/// README: "`wsgate --help` lists every flag; each has an environment
/// variable", above a table of them.
#[test]
fn the_help_and_the_readme_list_the_same_flags() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Configuration"))
        .expect("a Configuration section");
    assert!(
        section.contains("`wsgate --help` lists every flag"),
        "{section}"
    );
    // The first column of the flag table.
    let table: BTreeSet<String> = section
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .flat_map(|line| flags_in(line.split('|').nth(1).unwrap_or_default()))
        .collect();

    let (top_help, top) = help_flags(&[]);
    let (server_help, server) = help_flags(&["server"]);
    let (proxy_help, proxy) = help_flags(&["proxy"]);
    let every: BTreeSet<String> = server.union(&proxy).cloned().collect();
    assert_eq!(top, every, "`wsgate --help` names every flag of every mode");
    assert_eq!(
        table, every,
        "the README's table has every flag, and no other"
    );

    // Each flag's own entry shows its variable: one `[env: ...]` per flag.
    for help in [&top_help, &server_help, &proxy_help] {
        let described = help
            .lines()
            .filter(|line| line.trim_start().starts_with("--"))
            .count();
        assert_eq!(help.matches("[env: WSGATE_").count(), described, "{help}");
    }
}

#[test]
fn the_test_script_prints_its_usage_for_help() {
    for flag in ["--help", "-h"] {
        let mut command = Command::new("bash");
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test.sh"))
            .arg(flag);
        let finished = run_to_exit(command);
        assert!(finished.status.success(), "{finished:?}");
        assert!(
            finished.stdout.contains("Usage: scripts/test.sh"),
            "{finished:?}"
        );
        assert!(finished.stderr.is_empty(), "{finished:?}");
    }
}

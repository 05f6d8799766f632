//! `wsgate-bench`: the command line. Parses flags, runs one scenario of the
//! library, prints the human summary on stderr and one JSON line on stdout.

use std::process::ExitCode;

use clap::Parser as _;
use serde::Serialize;

use wsgate_bench::cli::Cli;
use wsgate_bench::sys;

#[derive(Serialize)]
struct Failure<'a> {
    scenario: &'a str,
    ok: bool,
    error: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Timestamps count from here.
    let _ = *wsgate_bench::ids::START;
    match sys::raise_nofile_limit() {
        Ok((soft, _)) if soft < 1024 => eprintln!("note: only {soft} open files allowed"),
        Ok(_) => {}
        Err(e) => eprintln!("note: cannot read the open-file limit: {e}"),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let name = cli.command.name();
    let result = runtime.block_on(cli.command.run());
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok((summary, json, ok)) => {
            eprintln!("{summary}");
            println!("{json}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{name}: setup failed: {e:#}");
            let failure = Failure {
                scenario: name,
                ok: false,
                error: format!("{e:#}"),
            };
            println!(
                "{}",
                serde_json::to_string(&failure).unwrap_or_else(|_| "{\"ok\":false}".to_owned())
            );
            ExitCode::FAILURE
        }
    }
}

use clap::CommandFactory as _;

use super::*;

/// The arguments of `fleetgate ARGS`.
fn parse(args: &[&str]) -> Command {
    Args::try_parse_from(std::iter::once("fleetgate").chain(args.iter().copied()))
        .unwrap()
        .command
}

#[test]
fn the_command_line_is_consistent() {
    Args::command().debug_assert();
}

#[test]
fn each_command_logs_at_its_level() {
    assert_eq!(parse(&["serve"]).log_level(), "info");
    assert_eq!(parse(&["agents"]).log_level(), "warn");
    assert_eq!(parse(&["worker", "--probe"]).log_level(), "warn");
}

#[tokio::test]
async fn a_run_whose_coordinator_is_not_a_url_is_a_usage_error() {
    let Command::Run(args) = parse(&["run", "--coordinator", "ftp://x"]) else {
        panic!("not a run");
    };
    let err = run(*args).await.unwrap_err();
    assert_eq!(err.exit_code(), exit::USAGE);
    assert!(
        err.to_string().starts_with("--coordinator ftp://x: "),
        "{err}"
    );
}

#[tokio::test]
async fn serving_needs_tls_or_plaintext() {
    let Command::Serve(args) = parse(&["serve", "--listen", "127.0.0.1:0"]) else {
        panic!("not serve");
    };
    if args.plaintext || args.tls_cert.is_some() {
        // Set by the environment (FLEETGATE_PLAINTEXT, FLEETGATE_TLS_CERT).
        return;
    }
    let err = serve(args, std::future::ready(())).await.unwrap_err();
    assert_eq!(err.exit_code(), exit::USAGE);
    assert_eq!(
        err.to_string(),
        "serve needs --tls-cert and --tls-key (a lab set: `fleetgate certs`), or --plaintext to serve without TLS"
    );
}

#[test]
fn certificates_are_made_only_for_safe_agent_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let Command::Certs(args) = parse(&[
        "certs",
        "--out",
        out.to_str().unwrap(),
        "--agent",
        "a1,../x",
    ]) else {
        panic!("not certs");
    };
    let err = certs(&args).unwrap_err();
    assert_eq!(err.exit_code(), exit::USAGE);
    assert_eq!(
        err.to_string(),
        "--agent ../x: use letters, digits, '-', '_' or '.' (at most 128)"
    );
    assert!(!out.exists(), "nothing is written for a refused request");
}

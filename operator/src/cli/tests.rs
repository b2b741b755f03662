use std::collections::BTreeMap;

use super::*;
use crate::logging::LogFormat;

/// An environment of these variables only.
fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

/// The run options of `args` in an environment of `vars`.
fn run(args: &[&str], vars: &[(&str, &str)]) -> RunOptions {
    let args = std::iter::once("sre-space").chain(args.iter().copied());
    match parse_from(args, env(vars)) {
        Ok((_, Command::Run(o))) => *o,
        Ok((_, other)) => panic!("not run: {other:?}"),
        Err(e) => panic!("{e}"),
    }
}

fn settings(vars: &[(&str, &str)]) -> Result<Settings> {
    Settings::from_options(run(&["run"], vars))
}

/// The error the operator stops with, as a person reads it.
fn refusal(args: &[&str], vars: &[(&str, &str)]) -> String {
    let args = std::iter::once("sre-space").chain(args.iter().copied());
    match parse_from(args, env(vars)) {
        Ok((_, Command::Run(o))) => match Settings::from_options(*o) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e.to_string(),
        },
        Ok((_, other)) => panic!("accepted: {other:?}"),
        Err(e) => e.render().to_string(),
    }
}

/// The `run` command as `--help` shows it.
fn run_command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd.find_subcommand("run").cloned().expect("run")
}

#[test]
fn with_nothing_set_the_operator_runs_alone_over_every_namespace_with_the_defaults() {
    let s = settings(&[]).expect("the defaults are valid");
    assert_eq!(s.config.namespace, None);
    assert_eq!(s.config.breaker_limit, 20);
    assert_eq!(s.config.breaker_window, std::time::Duration::from_secs(600));
    assert_eq!(s.config.namespace_share_percent, 50);
    assert!(!s.config.crash_after_record);
    assert!(s.lease.is_none(), "no Lease namespace: no election");
    assert_eq!(s.instance, "local");
    assert_eq!(s.http_addr, None);
    assert!(s.dashboard.is_none());
    assert!(s.github.is_none());
    assert!(s.llm.is_none());
    assert_eq!(s.kafka, Ok(None));
    assert!(s.traces.is_none());
    assert_eq!(s.allowlist.allowlist, None);
}

#[test]
fn sre_space_alone_runs_the_operator_and_keeps_its_logging_flags() {
    let (logging, command) =
        parse_from(["sre-space", "--log-format", "json"], env(&[])).expect("parses");
    assert!(matches!(command, Command::Run(_)), "{command:?}");
    assert_eq!(logging.log_format, LogFormat::Json);
    let (logging, _) = parse_from(["sre-space"], env(&[])).expect("parses");
    assert_eq!(logging.log_format, LogFormat::Text);
    assert_eq!(logging.rust_log, "info,kube=warn");
    assert_eq!(logging.otel_service_name, "sre-space");
}

#[test]
fn the_variables_the_chart_sets_become_the_settings() {
    let s = settings(&[
        ("SRE_SPACE_WATCH_NAMESPACE", "team-a"),
        ("SRE_SPACE_BREAKER_LIMIT", "1"),
        ("SRE_SPACE_BREAKER_WINDOW_SECONDS", "86400000"),
        ("SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT", "100"),
        ("SRE_SPACE_LEASE_NAMESPACE", "sre"),
        ("SRE_SPACE_LEASE_DURATION_SECONDS", "6"),
        ("POD_NAME", "sre-space-7d9f-x2"),
        ("SRE_SPACE_HTTP_ADDR", "0.0.0.0:8080"),
        (
            "SRE_SPACE_ALLOWLIST",
            "/etc/sre-space/allowlist/allowlist.yaml",
        ),
        ("SRE_SPACE_DASHBOARD_ADDR", "0.0.0.0:3001"),
        ("SRE_SPACE_DASHBOARD_TOKEN", "t0ken"),
        ("SRE_SPACE_JAEGER_UI", "http://jaeger.ops:16686/"),
        ("SRE_SPACE_GITHUB_TOKEN", "ghp_x"),
        ("SRE_SPACE_GITHUB_API_URL", "https://github.example/api/v3"),
        ("SRE_SPACE_LLM_BASE_URL", "http://127.0.0.1:11434/v1"),
        ("SRE_SPACE_LLM_MODEL", "qwen"),
        ("SRE_SPACE_LLM_TIMEOUT_SECONDS", "5"),
        ("SRE_SPACE_LLM_INCIDENT_TOKEN_BUDGET", "900"),
        ("SRE_SPACE_LLM_HOURLY_TOKEN_BUDGET", "9000"),
        ("SRE_SPACE_KAFKA_BOOTSTRAP", "kafka:9092"),
        ("SRE_SPACE_KAFKA_GROUP", "ops"),
        ("SRE_SPACE_JAEGER_QUERY", "http://jaeger-query:16686"),
    ])
    .expect("valid");
    assert_eq!(s.config.namespace.as_deref(), Some("team-a"));
    assert_eq!(s.config.breaker_limit, 1);
    assert_eq!(
        s.config.breaker_window,
        std::time::Duration::from_secs(86_400_000)
    );
    assert_eq!(s.config.namespace_share_percent, 100);
    let lease = s.lease.expect("election is on");
    assert_eq!(
        (lease.namespace.as_str(), lease.name.as_str()),
        ("sre", "sre-space")
    );
    assert_eq!(lease.identity, "sre-space-7d9f-x2");
    assert_eq!(lease.duration, std::time::Duration::from_secs(6));
    assert_eq!(lease.renew_every, std::time::Duration::from_secs(2));
    assert_eq!(s.instance, "sre-space-7d9f-x2");
    assert_eq!(s.http_addr.as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(
        s.allowlist.allowlist,
        Some(PathBuf::from("/etc/sre-space/allowlist/allowlist.yaml"))
    );
    let dashboard = s.dashboard.expect("dashboard");
    assert_eq!(dashboard.addr.to_string(), "0.0.0.0:3001");
    assert_eq!(dashboard.token.as_deref(), Some("t0ken"));
    assert_eq!(dashboard.jaeger_ui, "http://jaeger.ops:16686");
    let github = s.github.expect("github");
    assert_eq!(github.api_url, "https://github.example/api/v3");
    assert!(matches!(github.auth, crate::github::GitHubAuth::Token(ref t) if t == "ghp_x"));
    let llm = s.llm.expect("model");
    assert_eq!(llm.model, "qwen");
    assert_eq!(llm.timeout, std::time::Duration::from_secs(5));
    assert_eq!((llm.incident_budget, llm.hourly_budget), (900, 9000));
    assert_eq!(llm.max_answer_tokens, 800);
    assert_eq!(llm.evidence_bytes, 12_000);
    assert_eq!(
        llm.namespace_share_percent, 100,
        "one namespace watched: no other to leave room for"
    );
    assert_eq!(
        s.kafka,
        Ok(Some(KafkaConfig {
            bootstrap: "kafka:9092".into(),
            group: "ops".into()
        }))
    );
    assert_eq!(
        s.traces.expect("traces").base(),
        "http://jaeger-query:16686/"
    );
}

#[test]
fn a_flag_wins_over_its_variable() {
    let vars = [("SRE_SPACE_BREAKER_LIMIT", "5")];
    assert_eq!(run(&["run"], &vars).breaker.breaker_limit, 5);
    assert_eq!(
        run(&["run", "--breaker-limit", "7"], &vars)
            .breaker
            .breaker_limit,
        7
    );
}

#[test]
fn an_empty_variable_is_an_unset_one() {
    let s = settings(&[
        ("SRE_SPACE_WATCH_NAMESPACE", ""),
        ("SRE_SPACE_LEASE_NAMESPACE", ""),
        ("SRE_SPACE_DASHBOARD_ADDR", " "),
        ("SRE_SPACE_GITHUB_TOKEN", ""),
        ("SRE_SPACE_GITHUB_API_URL", ""),
        ("SRE_SPACE_LLM_BASE_URL", ""),
        ("SRE_SPACE_KAFKA_BOOTSTRAP", ""),
        ("SRE_SPACE_JAEGER_QUERY", " "),
        ("SRE_SPACE_ALLOWLIST", ""),
    ])
    .expect("valid");
    assert_eq!(s.config.namespace, None);
    assert!(s.lease.is_none());
    assert!(s.dashboard.is_none());
    assert!(s.github.is_none());
    assert!(s.llm.is_none());
    assert_eq!(s.kafka, Ok(None));
    assert!(s.traces.is_none());
    let github = settings(&[
        ("SRE_SPACE_GITHUB_TOKEN", "ghp_x"),
        ("SRE_SPACE_GITHUB_API_URL", ""),
    ])
    .expect("valid")
    .github
    .expect("github");
    assert_eq!(github.api_url, "https://api.github.com");
}

#[test]
fn a_bad_value_stops_the_start_naming_the_flag_the_variable_and_the_fix() {
    let cases: [(&str, &str, &str); 9] = [
        ("SRE_SPACE_BREAKER_LIMIT", "0", "use at least 1"),
        ("SRE_SPACE_BREAKER_LIMIT", "many", "not a whole number"),
        (
            "SRE_SPACE_BREAKER_WINDOW_SECONDS",
            "-1",
            "not a whole number",
        ),
        (
            "SRE_SPACE_BREAKER_NAMESPACE_SHARE_PERCENT",
            "101",
            "must be 1 to 100 (100: one namespace may use the whole breaker)",
        ),
        (
            "SRE_SPACE_LEASE_DURATION_SECONDS",
            "2",
            "a whole number of seconds, at least 3",
        ),
        (
            "SRE_SPACE_LLM_NAMESPACE_SHARE_PERCENT",
            "0",
            "must be 1 to 100 (100: one namespace may use the whole hourly budget)",
        ),
        ("SRE_SPACE_LLM_TIMEOUT_SECONDS", "30s", "not a whole number"),
        ("SRE_SPACE_LLM_MAX_ANSWER_TOKENS", "9999999999", "too large"),
        (
            "SRE_SPACE_LOG_FORMAT",
            "yaml",
            "[possible values: json, text]",
        ),
    ];
    for (variable, value, fix) in cases {
        let flag = format!(
            "--{}",
            variable
                .strip_prefix(PREFIX)
                .unwrap_or(variable)
                .to_lowercase()
                .replace('_', "-")
        );
        let said = refusal(&["run"], &[(variable, value)]);
        for part in [flag.as_str(), variable, fix] {
            assert!(said.contains(part), "{variable}={value}: {part} in {said}");
        }
        // Given as a flag, the variable is not blamed.
        let said = refusal(&["run", &format!("{flag}={value}")], &[]);
        assert!(said.contains(fix), "{said}");
        assert!(!said.contains(variable), "{said}");
    }
}

#[test]
fn settings_that_need_each_other_are_refused_alone_with_what_is_missing() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("SRE_SPACE_LLM_BASE_URL", "http://127.0.0.1:11434/v1")],
            "SRE_SPACE_LLM_BASE_URL is set but SRE_SPACE_LLM_MODEL is not",
        ),
        (
            &[("SRE_SPACE_DASHBOARD_ADDR", "0.0.0.0:3001")],
            "SRE_SPACE_DASHBOARD_TOKEN is not set",
        ),
        (
            &[("SRE_SPACE_DASHBOARD_ADDR", "localhost")],
            "is not an IP address and port",
        ),
        (
            &[("SRE_SPACE_GITHUB_APP_ID", "12")],
            "SRE_SPACE_GITHUB_APP_PRIVATE_KEY is required with SRE_SPACE_GITHUB_APP_ID",
        ),
        (
            &[("SRE_SPACE_JAEGER_QUERY", "jaeger:16686")],
            "SRE_SPACE_JAEGER_QUERY=\"jaeger:16686\"",
        ),
    ];
    for (vars, said) in cases {
        let refused = refusal(&["run"], vars);
        assert!(refused.contains(said), "{vars:?}: {refused}");
    }
}

#[test]
fn a_bad_kafka_list_turns_the_source_off_and_the_operator_runs_on() {
    let s = settings(&[("SRE_SPACE_KAFKA_BOOTSTRAP", "kafka")]).expect("starts");
    let why = s.kafka.expect_err("the source is off");
    assert!(why.contains("SRE_SPACE_KAFKA_BOOTSTRAP"), "{why}");
}

#[test]
fn the_test_hook_is_on_only_with_1_and_hidden() {
    let hook = |v: &str| {
        settings(&[("SRE_SPACE_TEST_CRASH_AFTER_RECORD", v)])
            .expect("valid")
            .config
            .crash_after_record
    };
    assert!(hook("1"));
    assert!(!hook("0"));
    assert!(!hook("yes"));
    let help = run_command().render_long_help().to_string();
    assert!(!help.contains("CRASH_AFTER_RECORD"), "{help}");
    assert!(!reference().contains("CRASH_AFTER_RECORD"));
}

#[test]
fn every_flag_is_named_after_its_variable() {
    let cmd = run_command();
    let mut seen = 0;
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long().filter(|l| *l != "help") else {
            continue;
        };
        let variable = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{long} has no variable"))
            .to_string_lossy()
            .into_owned();
        let expected = variable
            .strip_prefix(PREFIX)
            .unwrap_or(&variable)
            .to_lowercase()
            .replace('_', "-");
        assert_eq!(long, expected, "{variable}");
        seen += 1;
    }
    assert!(seen >= 30, "only {seen} settings");
}

#[test]
fn run_help_lists_every_variable_with_its_default_and_never_a_secret() {
    let cmd = run_command();
    let help = cmd.clone().render_long_help().to_string();
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(variable) = arg.get_env() {
            assert!(
                help.contains(&format!("env: {}", variable.to_string_lossy())),
                "{variable:?}"
            );
        }
    }
    for default in [
        "[default: 20]",
        "[default: 600]",
        "[default: 15]",
        "[default: sre-space]",
        "[default: https://api.github.com]",
        "[default: 100000]",
        "[default: info,kube=warn]",
    ] {
        assert!(help.contains(default), "{default}");
    }
    for heading in [
        "Kubernetes:",
        "Leader election:",
        "Circuit breaker:",
        "Metrics and health:",
        "Dashboard:",
        "GitHub:",
        "Language model:",
        "Kafka:",
        "Traces:",
        "Allow-list:",
        "Logging:",
    ] {
        assert!(help.contains(heading), "{heading}");
    }
    // A variable that holds a credential never has its value printed.
    for arg in cmd.get_arguments() {
        let variable = arg
            .get_env()
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        if ["TOKEN", "KEY"].iter().any(|s| variable.ends_with(s)) {
            assert!(arg.is_hide_env_values_set(), "{variable} is shown");
        }
    }
}

#[test]
fn a_variable_no_setting_reads_is_named_with_the_one_it_likely_meant() {
    let unread = unread_variables([
        ("SRE_SPACE_BREAKER_LIMT", "5"),
        ("SRE_SPACE_BREAKER_LIMIT", "5"),
        ("SRE_SPACE_LLM_MODLE", "qwen"),
        ("SRE_SPACE_TEST_CRASH_AFTER_RECORD", "1"),
        ("SRE_SPACE_CACHE", "/tmp"),
        ("PATH", "/bin"),
    ]);
    assert_eq!(
        unread,
        vec![
            (
                "SRE_SPACE_BREAKER_LIMT".to_string(),
                Some("SRE_SPACE_BREAKER_LIMIT".to_string())
            ),
            ("SRE_SPACE_CACHE".to_string(), None),
            (
                "SRE_SPACE_LLM_MODLE".to_string(),
                Some("SRE_SPACE_LLM_MODEL".to_string())
            ),
        ]
    );
}

#[test]
fn eval_reads_the_model_and_capture_the_trace_store() {
    let vars = [
        ("SRE_SPACE_LLM_BASE_URL", "http://127.0.0.1:11434/v1"),
        ("SRE_SPACE_LLM_MODEL", "qwen"),
        ("SRE_SPACE_JAEGER_QUERY", "http://jaeger:16686"),
    ];
    let Ok((_, Command::Eval(e))) = parse_from(["sre-space", "eval"], env(&vars)) else {
        panic!("eval parses");
    };
    let llm = LlmConfig::from_options(&e.llm)
        .expect("valid")
        .expect("a model");
    assert_eq!(llm.model, "qwen");
    assert_eq!(e.scenarios, PathBuf::from("scenarios"));
    let args = [
        "sre-space",
        "capture",
        "-n",
        "shop",
        "--incident",
        "i",
        "--expect",
        "CrashLoop",
        "--action",
        "RestartPod",
        "--description",
        "d",
        "-o",
        "x.json",
    ];
    let Ok((_, Command::Capture(c))) = parse_from(args, env(&vars)) else {
        panic!("capture parses");
    };
    assert_eq!(
        c.traces.jaeger_query.as_deref(),
        Some("http://jaeger:16686")
    );
}

#[test]
fn the_configuration_page_lists_every_setting_by_area() {
    let page = reference();
    for arg in run_command().get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(variable) = arg.get_env() {
            assert!(
                page.contains(&format!("`{}`", variable.to_string_lossy())),
                "{variable:?}"
            );
        }
    }
    assert!(page.contains("\n## Circuit breaker\n"));
    assert!(page.contains(
        "| `--breaker-limit <ACTIONS>` | `SRE_SPACE_BREAKER_LIMIT` | `20` | At most this many actions"
    ));
    assert!(page.contains("A secret: its value is never shown."));
}

#[test]
fn docs_configuration_md_is_the_current_reference() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == reference(),
        "{} is not the current configuration reference; regenerate it with\n  {REGENERATE}",
        path.display()
    );
}

#[test]
fn the_sweep_is_off_unless_scheduled_and_a_bad_setting_names_its_variable() {
    assert!(settings(&[]).expect("fine").sweep.is_none());
    let on = settings(&[
        ("SRE_SPACE_SWEEP_SCHEDULE", "0 5 * * *"),
        ("SRE_SPACE_SWEEP_TIME_ZONE", "Europe/Berlin"),
        ("SRE_SPACE_SWEEP_WINDOW_HOURS", "48"),
    ])
    .expect("fine")
    .sweep
    .expect("scheduled");
    assert_eq!(on.schedule.expression(), "0 5 * * *");
    assert_eq!(on.schedule.zone_name(), "Europe/Berlin");
    assert_eq!(on.thresholds.window_seconds, 48 * 3600);
    assert_eq!(on.starting_deadline_seconds, 3600);
    for (variable, value, says) in [
        (
            "SRE_SPACE_SWEEP_SCHEDULE",
            "every day",
            "SRE_SPACE_SWEEP_SCHEDULE",
        ),
        (
            "SRE_SPACE_SWEEP_TIME_ZONE",
            "Mars/Olympus",
            "SRE_SPACE_SWEEP_TIME_ZONE",
        ),
        (
            "SRE_SPACE_SWEEP_RECURRENCES",
            "0",
            "SRE_SPACE_SWEEP_RECURRENCES",
        ),
        (
            "SRE_SPACE_SWEEP_WINDOW_HOURS",
            "9000",
            "SRE_SPACE_SWEEP_WINDOW_HOURS",
        ),
        (
            "SRE_SPACE_SWEEP_STARTING_DEADLINE_SECONDS",
            "-1",
            "SRE_SPACE_SWEEP_STARTING_DEADLINE_SECONDS",
        ),
        (
            "SRE_SPACE_SWEEP_MAX_SAME_FIX",
            "many",
            "SRE_SPACE_SWEEP_MAX_SAME_FIX",
        ),
    ] {
        let mut vars = vec![(variable, value)];
        if variable != "SRE_SPACE_SWEEP_SCHEDULE" {
            vars.push(("SRE_SPACE_SWEEP_SCHEDULE", "0 5 * * *"));
        }
        let said = refusal(&["run"], &vars);
        assert!(said.contains(says), "{variable}={value}: {said}");
    }
}

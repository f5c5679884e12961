//! Proxies through the real binary, on every transport: the environment's (either case,
//! with NO_PROXY), `--proxy`, `--no-proxy`; a refusal reported as not delivered with its
//! reason; credentials never printed.

use assert_cmd::Command;
mod common;
use common::{engage, report};
use engage_conformance::servers::{ConnectProxy, ProxyMode};
use engage_emulator::{Emulator, EmulatorConfig};

const TOKEN: &str = "proxy-test-token-0123";
const TRANSPORTS: [&str; 3] = ["hyper", "curl", "async-std"];

fn input(dir: &std::path::Path) -> String {
    let path = dir.join("in.ndjson");
    let lines: String = (0..20)
        .map(|i| format!("{{\"$distinct_id\":\"u{i}\",\"$set\":{{\"n\":{i}}}}}\n"))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path.to_string_lossy().into_owned()
}

fn import(base_url: &str, file: &str, transport: &str) -> Command {
    let mut c = engage();
    c.args(["import", file, "--endpoint", base_url, "--token", TOKEN])
        .args(["--transport", transport, "--report", "json"])
        .args(["--backoff-base-ms", "5", "--backoff-max-ms", "20"]);
    c
}

#[test]
fn the_environment_is_honoured_the_same_way_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path());
    let proxy = ConnectProxy::start(ProxyMode::RequireBasic("ann".into(), "pw-1234".into()));
    for (i, transport) in TRANSPORTS.into_iter().enumerate() {
        let e = Emulator::start(EmulatorConfig::default().token(TOKEN)).unwrap();
        // Upper case for one, lower case for the others.
        let variable = if i == 0 { "HTTP_PROXY" } else { "http_proxy" };
        let before = proxy.seen().len();
        let out = import(&e.base_url(), &file, transport)
            .env(variable, proxy.url_with("ann", "pw-1234"))
            .assert()
            .code(0)
            .get_output()
            .clone();
        assert_eq!(report(&out.stdout)["accepted"], 20, "{transport}");
        let seen = proxy.seen();
        assert!(seen.len() > before, "{transport}: the proxy was not used");
        let r = &seen[before];
        assert_eq!(r.method, "POST", "{transport}");
        assert!(
            r.target.starts_with(&e.base_url()),
            "{transport}: {}",
            r.target
        );
        assert_eq!(r.answered, 200, "{transport}: credentials from the URL");
        assert_eq!(e.stats().accepted, 20, "{transport}");

        // NO_PROXY naming the target, and --no-proxy, go direct.
        let seen_before = proxy.seen().len();
        import(&e.base_url(), &file, transport)
            .env(variable, proxy.url())
            .env("NO_PROXY", "127.0.0.1")
            .assert()
            .code(0);
        import(&e.base_url(), &file, transport)
            .env(variable, proxy.url())
            .arg("--no-proxy")
            .assert()
            .code(0);
        assert_eq!(
            proxy.seen().len(),
            seen_before,
            "{transport}: went through the proxy"
        );
        assert_eq!(e.stats().accepted, 60, "{transport}");
    }
}

#[test]
fn the_proxy_option_overrides_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path());
    let from_env = ConnectProxy::start(ProxyMode::Open);
    let chosen = ConnectProxy::start(ProxyMode::Open);
    for transport in TRANSPORTS {
        let e = Emulator::start(EmulatorConfig::default().token(TOKEN)).unwrap();
        import(&e.base_url(), &file, transport)
            .env("HTTP_PROXY", from_env.url())
            .args(["--proxy", &chosen.url()])
            .assert()
            .code(0);
        assert_eq!(e.stats().accepted, 20, "{transport}");
    }
    assert!(from_env.seen().is_empty());
    assert!(chosen.seen().len() >= 3);
}

#[test]
fn a_refusing_proxy_is_not_delivered_with_its_reason_and_no_credentials_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path());
    let proxy = ConnectProxy::start(ProxyMode::Refuse(403));
    for transport in TRANSPORTS {
        // An https target: the refusal is the proxy's answer to CONNECT.
        let out = import("https://127.0.0.1:9", &file, transport)
            .args(["--proxy", &proxy.url_with("ann", "hunter2-secret")])
            .assert()
            .code(1)
            .get_output()
            .clone();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("hunter2-secret"), "{transport}: {all}");
        assert!(!all.contains(TOKEN), "{transport}: {all}");
        let r = report(&out.stdout);
        assert_eq!(r["not_delivered"], 20, "{transport}: {r}");
        assert!(
            r["fatal"].as_str().unwrap().contains("refused the tunnel"),
            "{transport}: {r}"
        );
        let reason = r["reasons"]["not_delivered"][0]["reason"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.contains("refused the tunnel (HTTP 403"),
            "{transport}: {r}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("refused the tunnel"),
            "{transport}: said at once: {stderr}"
        );
    }
}

#[test]
fn an_unusable_proxy_setting_stops_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path());
    let e = Emulator::start(EmulatorConfig::default().token(TOKEN)).unwrap();
    let out = import(&e.base_url(), &file, "hyper")
        .args(["--proxy", "socks5://ann:pw-9876@127.0.0.1:1080"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SOCKS proxies are not supported"),
        "{stderr}"
    );
    assert!(!stderr.contains("pw-9876"), "{stderr}");
    let out = import(&e.base_url(), &file, "curl")
        .env("HTTPS_PROXY", "ftp://127.0.0.1:21")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTPS_PROXY is not a usable proxy"),
        "{stderr}"
    );
    assert_eq!(e.stats().requests, 0);
}

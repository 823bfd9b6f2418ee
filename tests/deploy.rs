//! The deployment files in deploy/, checked as far as they can be where no Docker engine or
//! systemd runs: the compose file is YAML, its policy passes `cachalot check` and agrees
//! with the services, ports and Dockerfile; every environment variable the files set is one
//! the program reads; the systemd unit runs the image's binary with the image's paths and
//! keeps its hardening; and the README points at both.

use cachalot::Policy;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    yaml::parse(&read("deploy/docker-compose.yml"))
}

fn service(compose: &Value, name: &str) -> Map<String, Value> {
    compose["services"][name]
        .as_object()
        .unwrap_or_else(|| panic!("no service {name} in deploy/docker-compose.yml"))
        .clone()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

/// Every Rust source of the program, to ask whether it reads a variable.
fn program_sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut out = String::new();
    walk(&repo("src"), &mut out);
    out
}

/// Whether cachalot reads this environment variable.
fn cachalot_reads(name: &str, sources: &str) -> bool {
    match name {
        // tracing-subscriber's filter reads it by that name.
        "RUST_LOG" => sources.contains("EnvFilter::try_from_default_env"),
        _ => sources.contains(&format!("\"{name}\"")),
    }
}

/// The instructions of a Dockerfile whose first word is `instruction`, without it.
fn dockerfile(path: &str, instruction: &str) -> Vec<String> {
    read(path)
        .lines()
        .filter_map(|line| line.strip_prefix(instruction)?.strip_prefix(' '))
        .map(|rest| rest.trim().to_string())
        .collect()
}

/// An exec-form instruction (`CMD ["a", "b"]`) as its words.
fn exec_form(path: &str, instruction: &str) -> Vec<String> {
    let found = dockerfile(path, instruction);
    let [json] = found.as_slice() else {
        panic!("{path}: expected one {instruction}, found {found:?}");
    };
    strings(&serde_json::from_str(json).expect("exec form is a JSON list"))
}

/// `KEY=value` pairs of a Dockerfile's `ENV` lines.
fn dockerfile_env(path: &str) -> Vec<(String, String)> {
    dockerfile(path, "ENV")
        .iter()
        .flat_map(|line| line.split_whitespace())
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("ENV KEY=value");
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// The cachalot service's policy, as the container sees it: the host file its bind mount
/// puts at the `--config` path.
fn compose_policy_file(cachalot: &Map<String, Value>) -> PathBuf {
    let command = strings(&cachalot["command"]);
    let [run, flag, config] = command.as_slice() else {
        panic!("expected [run, --config, PATH]: {command:?}");
    };
    assert_eq!((run.as_str(), flag.as_str()), ("run", "--config"));
    for volume in strings(&cachalot["volumes"]) {
        let parts: Vec<&str> = volume.split(':').collect();
        let (host, inside) = (parts[0], parts[1]);
        if let Some(rest) = config.strip_prefix(inside) {
            return repo("deploy").join(host).join(rest.trim_start_matches('/'));
        }
    }
    panic!("{config} is not on any volume of the cachalot service");
}

#[test]
fn the_compose_file_is_yaml() {
    let ours = compose();
    assert_eq!(
        ours["services"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["api", "cachalot", "redis"]
    );
    // Where PyYAML is installed, a real parser must read the same document.
    let script = "import json, sys, yaml\n\
        def plain(v):\n\
        \x20   if isinstance(v, dict): return {k: plain(x) for k, x in v.items()}\n\
        \x20   if isinstance(v, list): return [plain(x) for x in v]\n\
        \x20   if isinstance(v, bool): return 'true' if v else 'false'\n\
        \x20   return str(v)\n\
        print(json.dumps(plain(yaml.safe_load(open(sys.argv[1])))))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(repo("deploy/docker-compose.yml"))
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(ours, theirs, "our reader and PyYAML disagree");
        }
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named 'yaml'") => {
            eprintln!(
                "PyYAML is not installed: the compose file was read by the test's reader only"
            );
        }
        Ok(out) => panic!(
            "PyYAML rejects deploy/docker-compose.yml: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            eprintln!("no python3 ({e}): the compose file was read by the test's reader only")
        }
    }
}

#[test]
fn the_compose_policy_passes_check_and_agrees_with_the_services() {
    let compose = compose();
    let cachalot = service(&compose, "cachalot");
    assert_eq!(cachalot["build"]["context"], "..");
    assert!(repo(cachalot["build"]["dockerfile"].as_str().unwrap()).is_file());

    let file = compose_policy_file(&cachalot);
    let env = cachalot["environment"].as_object().unwrap();
    let redis_url = env["REDIS_URL"].as_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["check", "--config"])
        .arg(&file)
        .env("REDIS_URL", redis_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cachalot check {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    let policy = Policy::load(&file).unwrap();
    for (what, addr) in [("addr", policy.listen.addr), ("admin", policy.listen.admin)] {
        assert!(
            addr.ip().is_unspecified(),
            "listen.{what} must be 0.0.0.0 in a container"
        );
    }
    let ports = strings(&cachalot["ports"]);
    let published = |port: u16| {
        ports
            .iter()
            .find(|p| p.ends_with(&format!(":{port}")))
            .unwrap_or_else(|| panic!("port {port} is not published: {ports:?}"))
            .clone()
    };
    published(policy.listen.addr.port());
    assert!(
        published(policy.listen.admin.port()).starts_with("127.0.0.1:"),
        "the admin port is published on the host's loopback only"
    );
    let exposed = dockerfile("Dockerfile", "EXPOSE").join(" ");
    for port in [policy.listen.addr.port(), policy.listen.admin.port()] {
        assert!(
            exposed.split(' ').any(|p| p == port.to_string()),
            "EXPOSE {exposed}"
        );
    }

    let origin = &policy.origin.url;
    let api = service(&compose, "api");
    assert!(
        compose["services"][origin.host().unwrap()].is_object(),
        "{origin}"
    );
    // The compose file's environment wins over the image's.
    let api_port = match api["environment"]["PORT"].as_str() {
        Some(port) => port.to_string(),
        None => {
            dockerfile_env("deploy/flask-api.Dockerfile")
                .into_iter()
                .find(|(key, _)| key == "PORT")
                .expect("the API's PORT")
                .1
        }
    };
    assert_eq!(origin.port_u16().unwrap().to_string(), api_port);
    for url in [redis_url, policy.redis.url.as_str()] {
        let host = url
            .trim_start_matches("redis://")
            .split(':')
            .next()
            .unwrap();
        assert!(compose["services"][host].is_object(), "{url}");
    }
}

#[test]
fn the_compose_policy_has_the_example_policys_routes() {
    let routes = |path: &str| {
        let text = read(path);
        let start = text
            .find("\n# --- Routes")
            .unwrap_or_else(|| panic!("{path} has no '# --- Routes' line"));
        text[start..].to_string()
    };
    assert!(
        routes("deploy/cachalot.compose.toml") == routes("config/cachalot.toml"),
        "deploy/cachalot.compose.toml's routes differ from config/cachalot.toml's: copy \
         everything from '# --- Routes' down"
    );
}

#[test]
fn every_variable_the_deploy_files_set_is_one_the_program_reads() {
    let compose = compose();
    let sources = program_sources();
    let unit = systemd_unit();
    let mut set: Vec<String> = service(&compose, "cachalot")["environment"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    set.extend(
        unit.iter()
            .filter(|(key, _)| key == "Environment")
            .flat_map(|(_, value)| value.split_whitespace())
            .map(|pair| pair.split_once('=').unwrap().0.to_string()),
    );
    set.extend(
        read("deploy/cachalot.env.example")
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| line.split_once('=').unwrap().0.to_string()),
    );
    for name in [
        "REDIS_URL",
        "CACHALOT_ADMIN_TOKEN",
        "CACHALOT_LOG_FORMAT",
        "RUST_LOG",
    ] {
        assert!(set.iter().any(|s| s == name), "{name} is set somewhere");
    }
    for name in &set {
        assert!(
            cachalot_reads(name, &sources),
            "cachalot never reads {name}"
        );
    }

    let app = read("examples/flask-api/app.py");
    let api = service(&compose, "api");
    let api_env = api["environment"].as_object().unwrap().keys().cloned();
    let image_env = dockerfile_env("deploy/flask-api.Dockerfile")
        .into_iter()
        .map(|(k, _)| k);
    for name in api_env.chain(image_env) {
        assert!(
            app.contains(&format!("os.environ.get(\"{name}\"")),
            "examples/flask-api/app.py never reads {name}"
        );
    }
}

#[test]
fn the_flask_api_image_copies_files_that_exist() {
    let compose = compose();
    let build = &service(&compose, "api")["build"];
    let context = repo("deploy").join(build["context"].as_str().unwrap());
    let dockerfile = context.join(build["dockerfile"].as_str().unwrap());
    assert_eq!(
        dockerfile.canonicalize().unwrap(),
        repo("deploy/flask-api.Dockerfile").canonicalize().unwrap()
    );
    for copy in self::dockerfile("deploy/flask-api.Dockerfile", "COPY") {
        let source = copy.split_whitespace().next().unwrap();
        assert!(
            context.join(source).is_file(),
            "COPY {source}: not in {}",
            context.display()
        );
    }
    let command = exec_form("deploy/flask-api.Dockerfile", "CMD").join(" ");
    assert!(
        command.contains("init_db()") && command.contains("0.0.0.0"),
        "{command}"
    );
}

/// `Key=value` lines of deploy/cachalot.service, in order (keys may repeat).
fn systemd_unit() -> Vec<(String, String)> {
    read("deploy/cachalot.service")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

#[test]
fn the_systemd_unit_runs_the_images_binary_hardened() {
    let unit = systemd_unit();
    let get = |key: &str| -> Vec<&str> {
        unit.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let mut image = exec_form("Dockerfile", "ENTRYPOINT");
    image.extend(exec_form("Dockerfile", "CMD"));
    let exec: Vec<String> = get("ExecStart")[0]
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(exec, image, "the unit runs what the image runs");
    let config = Path::new(image.last().unwrap());
    let copied = dockerfile("Dockerfile", "COPY");
    assert!(
        copied
            .iter()
            .any(|c| c.ends_with(&format!(" {}", image[0])))
            && copied
                .iter()
                .any(|c| c.ends_with(&format!(" {}", config.display()))),
        "the image puts the binary and the policy where the unit looks: {copied:?}"
    );
    let config_dir = config.parent().unwrap().to_str().unwrap();
    assert_eq!(get("ReadOnlyPaths"), [config_dir]);
    let env_file = get("EnvironmentFile")[0].trim_start_matches('-');
    assert!(env_file.starts_with(config_dir), "{env_file}");

    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(get(key), [value], "{key}");
    }

    // Where systemd's own checker is installed: no unknown or misspelt setting, and an
    // exposure score that stays low. It needs the binary to exist, so the unit is checked
    // with the one cargo built.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: the unit was checked by reading only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cachalot.service");
    std::fs::write(
        &copy,
        read("deploy/cachalot.service").replace(&image[0], env!("CARGO_BIN_EXE_cachalot")),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !complaints.contains("cachalot.service"),
        "systemd-analyze verify: {complaints}"
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "exposure above 2.0:\n{}",
        String::from_utf8_lossy(&security.stdout)
    );
}

#[test]
fn the_readme_points_at_the_deploy_files() {
    let readme = read("README.md");
    for file in ["deploy/docker-compose.yml", "deploy/cachalot.service"] {
        assert!(readme.contains(file), "README.md does not mention {file}");
    }
}

/// The YAML subset deploy/docker-compose.yml is written in: block mappings, block lists of
/// scalars, flow lists written as JSON, double-quoted or plain scalars, and comments. Anything
/// else is an error, so the file stays readable by this test (and PyYAML checks it too,
/// where installed). Scalars stay strings, as compose treats most of them.
mod yaml {
    use serde_json::{Map, Value};

    struct Line<'a> {
        number: usize,
        indent: usize,
        text: &'a str,
    }

    pub fn parse(text: &str) -> Value {
        let lines: Vec<Line> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(n, l)| Line {
                number: n + 1,
                indent: l.len() - l.trim_start().len(),
                text: l.trim(),
            })
            .collect();
        let mut at = 0;
        let value = block(&lines, &mut at, 0);
        assert!(
            at == lines.len(),
            "line {}: unexpected indentation",
            lines[at].number
        );
        value
    }

    fn block(lines: &[Line], at: &mut usize, indent: usize) -> Value {
        if lines[*at].text.starts_with("- ") {
            let mut list = Vec::new();
            while *at < lines.len() && lines[*at].indent == indent {
                let line = &lines[*at];
                let item = line
                    .text
                    .strip_prefix("- ")
                    .unwrap_or_else(|| panic!("line {}: a list item expected", line.number));
                list.push(scalar(item, line.number));
                *at += 1;
            }
            return Value::Array(list);
        }
        let mut map = Map::new();
        while *at < lines.len() && lines[*at].indent == indent {
            let line = &lines[*at];
            let (key, value) = match line.text.split_once(": ") {
                Some((key, value)) => (key, value.trim()),
                None => (
                    line.text
                        .strip_suffix(':')
                        .unwrap_or_else(|| panic!("line {}: `key: value` expected", line.number)),
                    "",
                ),
            };
            *at += 1;
            let value = if !value.is_empty() {
                scalar(value, line.number)
            } else {
                let deeper = lines.get(*at).filter(|next| next.indent > indent);
                let next = deeper.unwrap_or_else(|| panic!("line {}: empty value", line.number));
                block(lines, at, next.indent)
            };
            assert!(
                map.insert(key.to_string(), value).is_none(),
                "line {}: {key} twice",
                line.number
            );
        }
        Value::Object(map)
    }

    fn scalar(text: &str, number: usize) -> Value {
        if text.starts_with('[') || text.starts_with('"') {
            return serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("line {number}: not in the subset ({e}): {text}"));
        }
        assert!(
            !text.contains(" #") && !text.starts_with(['{', '\'', '&', '*', '|', '>']),
            "line {number}: not in the subset: {text}"
        );
        Value::String(text.to_string())
    }
}

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

/// Where PyYAML is installed, a real parser must read `path` as our reader does.
fn pyyaml_agrees(path: &str, ours: &Value) {
    let script = "import json, sys, yaml\n\
        def plain(v):\n\
        \x20   if isinstance(v, dict): return {k: plain(x) for k, x in v.items()}\n\
        \x20   if isinstance(v, list): return [plain(x) for x in v]\n\
        \x20   if isinstance(v, bool): return 'true' if v else 'false'\n\
        \x20   return str(v)\n\
        print(json.dumps(plain(yaml.safe_load(open(sys.argv[1])))))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(repo(path))
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(ours, &theirs, "{path}: our reader and PyYAML disagree");
        }
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named 'yaml'") => {
            eprintln!("PyYAML is not installed: {path} was read by the test's reader only");
        }
        Ok(out) => panic!(
            "PyYAML rejects {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("no python3 ({e}): {path} was read by the test's reader only"),
    }
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
    pyyaml_agrees("deploy/docker-compose.yml", &ours);
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
    assert_has_the_example_routes("deploy/cachalot.compose.toml");
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
    for file in [
        "deploy/docker-compose.yml",
        "deploy/cachalot.service",
        "deploy/kubernetes",
    ] {
        assert!(readme.contains(file), "README.md does not mention {file}");
    }
}

fn kubernetes(file: &str) -> Value {
    let path = format!("deploy/kubernetes/{file}");
    let value = yaml::parse(&read(&path));
    pyyaml_agrees(&path, &value);
    value
}

/// The Deployment's one container.
fn kubernetes_container() -> Map<String, Value> {
    let deployment = kubernetes("deployment.yaml");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    let [container] = containers.as_slice() else {
        panic!("expected one container: {containers:?}");
    };
    container.as_object().unwrap().clone()
}

/// `name: value` pairs of the container's environment (those with a literal value).
fn kubernetes_env(container: &Map<String, Value>) -> Vec<(String, Option<String>)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            (
                var["name"].as_str().unwrap().to_string(),
                var.get("value").and_then(Value::as_str).map(String::from),
            )
        })
        .collect()
}

#[test]
fn the_kubernetes_example_fits_together() {
    let kustomization = kubernetes("kustomization.yaml");
    for resource in strings(&kustomization["resources"]) {
        assert!(
            repo("deploy/kubernetes").join(&resource).is_file(),
            "{resource}"
        );
    }
    let generated = &kustomization["configMapGenerator"][0];
    let config_map = generated["name"].as_str().unwrap();
    let [policy_file] = strings(&generated["files"]).try_into().unwrap();
    assert_eq!(
        kustomization["generatorOptions"]["disableNameSuffixHash"], "true",
        "a hashed ConfigMap name restarts pods instead of letting them reload"
    );

    let deployment = kubernetes("deployment.yaml");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let service = kubernetes("service.yaml");
    assert_eq!(&service["spec"]["selector"], labels);

    // The policy volume: the ConfigMap, mounted as a directory (a subPath never updates),
    // holding the file `run --config` names.
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == config_map)
        .expect("a volume of the policy ConfigMap");
    let container = kubernetes_container();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the policy volume is mounted");
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees updates"
    );
    let args = strings(&container["args"]);
    assert_eq!(
        args,
        [
            "run",
            "--config",
            &format!("{}/{policy_file}", mount["mountPath"].as_str().unwrap())
        ]
    );
    let user = dockerfile("Dockerfile", "USER").join("");
    assert_eq!(
        user,
        format!(
            "{}:{}",
            pod["spec"]["securityContext"]["runAsUser"]
                .as_str()
                .unwrap(),
            pod["spec"]["securityContext"]["runAsGroup"]
                .as_str()
                .unwrap()
        ),
        "the pod runs as the image's user"
    );

    // The policy passes `check` with the Deployment's environment, which sets the origin.
    let env = kubernetes_env(&container);
    let literal: Vec<(String, String)> = env
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["check", "--config"])
        .arg(repo("deploy/kubernetes").join(&policy_file))
        .env_remove("CACHALOT_LISTEN")
        .env_remove("CACHALOT_ADMIN_LISTEN")
        .envs(literal.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cachalot check {policy_file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let origin = &literal
        .iter()
        .find(|(k, _)| k == "CACHALOT_ORIGIN")
        .unwrap()
        .1;
    assert!(stdout.contains(&format!("origin {origin}/")), "{stdout}");
    let sources = program_sources();
    for (name, _) in &env {
        assert!(
            cachalot_reads(name, &sources),
            "cachalot never reads {name}"
        );
    }

    // Ports: the container's named ports are the policy's; probes ask the admin port; the
    // Service exposes the public one only.
    let policy = Policy::load(&repo("deploy/kubernetes").join(&policy_file)).unwrap();
    let port = |name: &str| -> u16 {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port {name}"))["containerPort"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(port("http"), policy.listen.addr.port());
    assert_eq!(port("admin"), policy.listen.admin.port());
    let exposed = dockerfile("Dockerfile", "EXPOSE").join(" ");
    for p in [port("http"), port("admin")] {
        assert!(
            exposed.split(' ').any(|e| e == p.to_string()),
            "EXPOSE {exposed}"
        );
    }
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let service_ports = service["spec"]["ports"].as_array().unwrap();
    assert!(
        service_ports.iter().all(|p| p["targetPort"] == "http"),
        "the Service must not expose the admin port: {service_ports:?}"
    );
}

#[test]
fn the_kubernetes_policy_has_the_example_policys_routes() {
    assert_has_the_example_routes("deploy/kubernetes/cachalot.toml");
}

#[test]
fn the_image_healthcheck_runs_cachalot_health() {
    let check = dockerfile("Dockerfile", "HEALTHCHECK").join("");
    let json = check
        .split_once(" CMD ")
        .map(|(_, cmd)| cmd)
        .expect("HEALTHCHECK ... CMD [...]");
    let command = strings(&serde_json::from_str(json).expect("exec form"));
    let binary = exec_form("Dockerfile", "ENTRYPOINT");
    assert_eq!(command, [binary[0].as_str(), "health"]);
    let env = dockerfile_env("Dockerfile");
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(get("CACHALOT_LISTEN"), Some("0.0.0.0:8080"));
    assert_eq!(get("CACHALOT_ADMIN_LISTEN"), Some("0.0.0.0:9901"));
    assert!(
        dockerfile("Dockerfile", "COPY")
            .iter()
            .any(|c| c.ends_with(get("CACHALOT_CONFIG").unwrap())),
        "CACHALOT_CONFIG names the baked policy"
    );
    let compose = compose();
    for name in ["redis", "api", "cachalot"] {
        assert!(
            service(&compose, name).contains_key("healthcheck"),
            "compose service {name} has no healthcheck"
        );
    }
    let cachalot = service(&compose, "cachalot");
    let test = strings(&cachalot["healthcheck"]["test"]);
    assert_eq!(&test[..3], ["CMD", binary[0].as_str(), "health"]);
    assert_eq!(
        cachalot["depends_on"]["redis"]["condition"], "service_healthy",
        "cachalot starts once Redis answers"
    );
}

/// The YAML subset deploy/docker-compose.yml and deploy/kubernetes are written in: block
/// mappings, block lists of scalars or of mappings (`- name: x`), flow lists written as JSON, double-quoted or plain scalars, and comments. Anything
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
        let mut lines: Vec<Line> = Vec::new();
        for (n, l) in text.lines().enumerate() {
            if l.trim().is_empty() || l.trim_start().starts_with('#') {
                continue;
            }
            let (number, indent, text) = (n + 1, l.len() - l.trim_start().len(), l.trim());
            // A list item that opens a mapping (`- name: x`) is a bare `-` with the mapping
            // indented under it, as Kubernetes manifests write lists of objects.
            match text.strip_prefix("- ") {
                Some(entry) if is_entry(entry) => {
                    lines.push(Line {
                        number,
                        indent,
                        text: "-",
                    });
                    lines.push(Line {
                        number,
                        indent: indent + 2,
                        text: entry,
                    });
                }
                _ => lines.push(Line {
                    number,
                    indent,
                    text,
                }),
            }
        }
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
        if lines[*at].text.starts_with("- ") || lines[*at].text == "-" {
            let mut list = Vec::new();
            while *at < lines.len() && lines[*at].indent == indent {
                let line = &lines[*at];
                *at += 1;
                if line.text == "-" {
                    list.push(block(lines, at, indent + 2));
                    continue;
                }
                let item = line
                    .text
                    .strip_prefix("- ")
                    .unwrap_or_else(|| panic!("line {}: a list item expected", line.number));
                list.push(scalar(item, line.number));
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

    /// Whether a list item's text is `key: value` or `key:` (not a quoted or flow scalar).
    fn is_entry(text: &str) -> bool {
        !text.starts_with(['"', '[']) && (text.contains(": ") || text.ends_with(':'))
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

/// A deployment's policy copies the example policy's routes word for word, from the
/// `# --- Routes` line down, so the example is the one place they are written.
fn assert_has_the_example_routes(path: &str) {
    let routes = |path: &str| {
        let text = read(path);
        let start = text
            .find("\n# --- Routes")
            .unwrap_or_else(|| panic!("{path} has no '# --- Routes' line"));
        text[start..].to_string()
    };
    assert!(
        routes(path) == routes("config/cachalot.toml"),
        "{path}'s routes differ from config/cachalot.toml's: copy everything from \
         '# --- Routes' down"
    );
}

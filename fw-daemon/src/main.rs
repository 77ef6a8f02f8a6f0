//! `fw-daemon`: the fw firewall daemon and its offline tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use fw_daemon::compile::CompileOptions;
use fw_daemon::config::{self as fw_config, LogFormat};
use fw_daemon::daemon;
use fw_daemon::rules::report::Style;
use fw_daemon::tools::{self, apply, check, explain, plan, reach, Failed};

#[derive(Parser)]
#[command(
    name = "fw-daemon",
    version,
    about = "Micro-segmentation firewall for containers: trust-zone rule files -> nftables in each container's netns",
    long_about = None,
    after_help = "\
Typical workflow:
  fw-daemon check rules/demo                       # every problem, as path:line:col
  fw-daemon plan rules/demo --inventory rules/demo-inventory.toml --container web-1
  fw-daemon explain rules/demo --inventory rules/demo-inventory.toml \\
      --from web-1 --to db-1 --proto tcp --port 5432

The rule language is documented in rules/README.md."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a rules directory; exit 0 when valid, 1 with every error otherwise
    #[command(after_help = "\
Every problem is printed as `path:line:col: error: message` (or `warning:`), so editors can jump
to it, followed by the source line with the problem underlined and notes. Warnings (overlapping
zones, shadowed or expired policies) do not fail the check unless --deny-warnings is given (for
CI). With --inventory, the inventory is checked too, and the output shows which zone each
container lands in. \"ok\" is printed only when there is no error.")]
    Check {
        /// Directory of *.toml rule files (merged in file-name order)
        dir: PathBuf,
        /// Container inventory to check against the zones
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Exit 1 on warnings too, not only on errors
        #[arg(long)]
        deny_warnings: bool,
        /// Colour the diagnostics: auto (when stderr is a terminal and NO_COLOR is unset)
        #[arg(long, value_enum, default_value_t = Color::Auto)]
        color: Color,
    },
    /// Print the nftables script each container's `table inet fw` would get
    #[command(after_help = "\
The output is exactly what would be programmed: `nft -c -f -` accepts each container's script.
Nothing is changed on this host.")]
    Plan {
        dir: PathBuf,
        /// Container inventory (TOML, see rules/demo-inventory.toml)
        #[arg(long)]
        inventory: PathBuf,
        /// Only this container
        #[arg(long)]
        container: Option<String>,
        /// NFLOG group that drop and audit records are sent to
        #[arg(long, default_value_t = 100)]
        log_group: u16,
    },
    /// Program every container in the inventory once (one atomic batch each) and exit
    #[command(after_help = "\
Each container's `table inet fw` is replaced atomically inside its network namespace: it has
either the old ruleset or the new one, never a mix. One failing container does not stop the
others; the exit code is 1 if any failed. Needs CAP_NET_ADMIN (root).")]
    Apply {
        dir: PathBuf,
        #[arg(long)]
        inventory: PathBuf,
        /// Only this container
        #[arg(long)]
        container: Option<String>,
        #[arg(long, default_value_t = 100)]
        log_group: u16,
        /// Also program the host-side floors (every container's host side is found, and
        /// each namespace holding some gets `table bridge fw_floor` for all of them)
        #[arg(long)]
        floor: bool,
    },
    /// Remove `table inet fw` from every container in the inventory
    #[command(after_help = "\
With --guard, also removes the host-side floor (`table bridge fw_floor`) from the namespace
the command runs in (the host's, with Docker): until a daemon runs again, containers there are
then held only by their own tables, and new ones by nothing.")]
    Flush {
        #[arg(long, required_unless_present = "guard")]
        inventory: Option<PathBuf>,
        #[arg(long)]
        container: Option<String>,
        /// Also remove the floors holding the inventory's host sides
        #[arg(long, requires = "inventory")]
        floor: bool,
        /// Remove the host-side floor in this namespace too (or only it, without --inventory)
        #[arg(long)]
        guard: bool,
    },
    /// Run the daemon: keep every container's firewall equal to the rule files
    #[command(after_help = "\
Containers come from Docker (by default when its socket exists: listed at start, then followed
through its events; netns from the init pid, addresses read inside the netns) and from the static
inventory (--inventory), re-read whenever it changes; both can run at once. The rules directory
is watched (inotify: files closed after writing or renamed into place, never a write in
progress; plus a re-read every --resync seconds, acted on once two reads agree); SIGHUP reloads
both. Write rule files by atomic rename. A reload is validated and compiled for every container
before anything changes; invalid files change nothing (errors are logged as path:line:col and
kept in STATE_DIR/status.json) and the last good policy stays enforced, also across restarts
(STATE_DIR/last-good/). Tables changed from inside a container are restored at once (nftables
change notifications, with a check every --tick seconds as the backstop).
SIGTERM stops the daemon and leaves enforcement in place; `fw-daemon flush` removes it.")]
    Run(Box<RunArgs>),
    /// Would FROM reach TO on PROTO/PORT, and which rule decides?
    #[command(after_help = "\
FROM and TO are container names from the inventory or IP addresses (an address outside the
inventory is an external peer). The answer comes from evaluating the compiled rulesets of both
ends: the sender's egress chain, the floor on the sender's host side, then the receiver's
ingress chain. Verdicts: allow, deny, audit-deny (a zone in audit mode would have dropped it:
logged and allowed). A flow a policy inspects says so, with the names it allows and what a
violation does. --proto any asks tcp and udp (on --port) and icmp, one answer each.

Exit status: 0 with the answer; 1 on an error (unknown container, bad rule files); 2 on a
usage error. With --exit-code the verdict is the status: 0 the traffic passes (allow, or
audit-deny), 1 it is denied (for --proto any: 0 if any protocol passes), 2 any error.")]
    Explain {
        dir: PathBuf,
        #[arg(long)]
        inventory: PathBuf,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long, value_enum)]
        proto: ProtoArg,
        /// Destination port (tcp and udp)
        #[arg(long)]
        port: Option<u16>,
        /// ICMP type by name (icmp only), e.g. echo-request [default: echo-request]
        #[arg(long)]
        icmp_type: Option<String>,
        /// Print JSON instead of text (with --proto any: an array)
        #[arg(long)]
        json: bool,
        /// Make the verdict the exit status: 0 passes, 1 denied, 2 error
        #[arg(long)]
        exit_code: bool,
    },
    /// Everything a container may reach (--from), or everyone who may reach it (--to)
    #[command(after_help = "\
Answered by explain's evaluator over the compiled rulesets of both ends: ports are split
wherever any compiled rule's port match changes and one port of each piece is evaluated, so
the ranges listed are exactly what the tables let through (audit-mode drops included, marked
audit-deny). Peers: each zone of containers (one member asked for), each external zone (a
host inside its first network), and `outside` (an address in no zone). What is not listed is
denied.

  fw-daemon reach rules/demo --inventory rules/demo-inventory.toml --from web-1
  fw-daemon reach rules/demo --inventory rules/demo-inventory.toml --to db-1 --json")]
    Reach {
        dir: PathBuf,
        #[arg(long)]
        inventory: PathBuf,
        /// What this container may reach
        #[arg(long, conflicts_with = "to", required_unless_present = "to")]
        from: Option<String>,
        /// Who may reach this container
        #[arg(long)]
        to: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout
    #[command(after_help = "For example: fw-daemon completions bash > /etc/bash_completion.d/fw-daemon")]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) on stdout
    #[command(after_help = "For example: fw-daemon man | man -l -")]
    Man,
}

/// `fw-daemon run` flags: each overrides the config file, which overrides the defaults.
#[derive(clap::Args)]
struct RunArgs {
    /// Config file with the same settings (flags override it) [default: /etc/fw/fw-daemon.toml, if present]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of *.toml rule files [default: /etc/fw/rules]
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Static container inventory (TOML, see rules/demo-inventory.toml)
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// Sidecar mode: program only the daemon's own network namespace, as the one container
    /// (a pod, described by --pod-info); needs only CAP_NET_ADMIN; no host-side floor, so a
    /// container of the pod with CAP_NET_RAW can bypass it (README, "Sidecar mode")
    #[arg(long = "self", conflicts_with_all = ["inventory", "docker", "cri", "cri_socket", "kube", "kube_api"])]
    own: bool,
    /// With --self: the downward-API volume holding the pod's `labels` (and `name`,
    /// `namespace`; else $POD_NAME, $POD_NAMESPACE, the hostname) [default: /etc/podinfo]
    #[arg(long, requires = "own")]
    pod_info: Option<PathBuf>,
    /// Discover containers from Docker [default: when the socket exists]
    #[arg(long, conflicts_with = "no_docker")]
    docker: bool,
    /// Do not use Docker, even when its socket exists
    #[arg(long)]
    no_docker: bool,
    /// Docker API socket [default: /var/run/docker.sock]
    #[arg(long)]
    docker_socket: Option<String>,
    /// Node agent: program the pods of this node's CRI runtime (containerd, CRI-O), each
    /// as `namespace/name` with its labels; hostNetwork pods are reported, not programmed
    #[arg(long)]
    cri: bool,
    /// The CRI runtime's socket; implies --cri [default: /run/containerd/containerd.sock;
    /// CRI-O: /var/run/crio/crio.sock]
    #[arg(long)]
    cri_socket: Option<String>,
    /// Seconds between two lists of the runtime's pod sandboxes [default: 0.25]
    #[arg(long)]
    cri_poll: Option<f64>,
    /// Follow the Kubernetes API (in-cluster service account, else the kubeconfig): the
    /// labels of each namespace, for match.namespace_labels, and the pods on other nodes,
    /// as peers in their zones
    #[arg(long)]
    kube: bool,
    /// The API server's URL instead (implies --kube)
    #[arg(long)]
    kube_api: Option<String>,
    /// This node's name: its pods come from the CRI runtime, not the API [default: $NODE_NAME]
    #[arg(long)]
    node_name: Option<String>,
    /// Containers not identified yet: deny (the host-side floor drops their ports until
    /// programmed) or default-zone (no guard; peers treat them as the default zone) [default: deny]
    #[arg(long, value_enum)]
    unknown_containers: Option<fw_config::Unknown>,
    /// Where the last good policy and the status survive restarts [default: /var/lib/fw]
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log format [default: human]
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// NFLOG group for drop and audit records [default: 100]
    #[arg(long)]
    log_group: Option<u16>,
    /// Seconds between drift checks of every namespace [default: 1]
    #[arg(long)]
    tick: Option<f64>,
    /// Seconds between full re-reads and re-reconciles (missed events, policy expiries) [default: 5]
    #[arg(long)]
    resync: Option<f64>,
    /// Control socket for fw-tui, or `none` [default: /run/fw/fw.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Group that may connect to the socket (file mode 0660) [default: the viewer group]
    #[arg(long)]
    socket_group: Option<String>,
    /// Members may block, unblock and reload [default: fw-operator]
    #[arg(long)]
    operator_group: Option<String>,
    /// Members may read status, flows, blocks and the audit log [default: fw-viewer]
    #[arg(long)]
    viewer_group: Option<String>,
    /// Audit log of every block, unblock and reload (JSON lines), or `none` [default: /var/log/fw/audit.jsonl]
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Flow table rows held at most; the oldest closed flows go first [default: 100000]
    #[arg(long)]
    max_flows: Option<usize>,
    /// Restores of one container's table within --tamper-window seconds that quarantine it
    /// at the host-side floor until an operator lifts it; 0 never escalates [default: 3]
    #[arg(long)]
    tamper_repairs: Option<u32>,
    /// Seconds over which --tamper-repairs are counted [default: 10]
    #[arg(long)]
    tamper_window: Option<f64>,
    /// Leave established flows alone when a reload or a membership change starts denying
    /// them (by default they are cut, like new ones)
    #[arg(long)]
    no_revoke_established: bool,
    /// Bytes in one rule file; a bigger one is refused unread [default: 1048576]
    #[arg(long)]
    max_rule_file_bytes: Option<u64>,
    /// Bytes in all rule files together [default: 8388608]
    #[arg(long)]
    max_rules_bytes: Option<u64>,
    /// Bytes in the inventory file [default: 8388608]
    #[arg(long)]
    max_inventory_bytes: Option<u64>,
}

impl RunArgs {
    /// The config file to read (explicit, or the default one if present) and the flags as
    /// a settings layer.
    fn split(self) -> (Option<PathBuf>, fw_config::Layer) {
        let file =
            self.config.or_else(|| Some(PathBuf::from(fw_config::DEFAULT_CONFIG)).filter(|p| p.exists()));
        let docker = if self.docker {
            Some(true)
        } else if self.no_docker {
            Some(false)
        } else {
            None
        };
        let layer = fw_config::Layer {
            rules: self.rules,
            inventory: self.inventory,
            docker,
            docker_socket: self.docker_socket,
            cri: self.cri.then_some(true),
            cri_socket: self.cri_socket,
            cri_poll: self.cri_poll,
            kube: self.kube.then_some(true),
            kube_api: self.kube_api,
            // The downward API's `spec.nodeName`, as the DaemonSet passes it.
            node_name: self.node_name.or_else(|| std::env::var("NODE_NAME").ok()),
            unknown_containers: self.unknown_containers,
            state_dir: self.state_dir,
            log_format: self.log_format,
            log_group: self.log_group,
            tick: self.tick,
            resync: self.resync,
            socket: self.socket,
            socket_group: self.socket_group,
            operator_group: self.operator_group,
            viewer_group: self.viewer_group,
            admin_group: None,
            audit_log: self.audit_log,
            audit_max_bytes: None,
            audit_keep: None,
            audit_retention_days: None,
            max_flows: self.max_flows,
            tamper_repairs: self.tamper_repairs,
            tamper_window: self.tamper_window,
            revoke_established: self.no_revoke_established.then_some(false),
            quarantine_responders: None,
            max_rule_file_bytes: self.max_rule_file_bytes,
            max_rules_bytes: self.max_rules_bytes,
            max_inventory_bytes: self.max_inventory_bytes,
        };
        (file, layer)
    }
}

/// When `check` colours its diagnostics.
#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
    /// tcp, udp and icmp, one answer each
    Any,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let now = tools::unix_now();
    match run(cli.cmd, now) {
        Ok(code) => code,
        Err(f) => {
            for l in f.lines() {
                eprintln!("{l}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(cmd: Cmd, now: i64) -> Result<ExitCode, Failed> {
    match cmd {
        Cmd::Check { dir, inventory, deny_warnings, color } => {
            use std::io::IsTerminal;
            let r = check::check(&dir, inventory.as_deref(), now);
            let style = match color {
                Color::Always => Style::Color,
                Color::Never => Style::Plain,
                Color::Auto if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() => {
                    Style::Color
                }
                Color::Auto => Style::Plain,
            };
            eprint!("{}", r.render(style));
            let (errors, warnings) = (r.errors(), r.warnings());
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            if errors > 0 {
                let also = if warnings > 0 {
                    format!(", {warnings} warning{}", plural(warnings))
                } else {
                    String::new()
                };
                eprintln!("{}: {errors} error{}{also}", dir.display(), plural(errors));
                return Ok(ExitCode::from(1));
            }
            if deny_warnings && warnings > 0 {
                eprintln!(
                    "{}: {warnings} warning{}, denied by --deny-warnings",
                    dir.display(),
                    plural(warnings)
                );
                return Ok(ExitCode::from(1));
            }
            for l in &r.summary {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plan { dir, inventory, container, log_group } => {
            let (policy, inv, diags) = tools::load_both(&dir, &inventory, now)?;
            for d in diags {
                eprintln!("{d}");
            }
            let opts = CompileOptions {
                log_group,
                inspect_queue: log_group.wrapping_add(1),
                now,
                ..CompileOptions::default()
            };
            let mut plans = plan::plan(&policy, &inv, container.as_deref(), &opts)?;
            plans.push(plan::plan_floor(&policy, &inv, container.as_deref(), &opts));
            let texts: Vec<&str> = plans.iter().map(|p| p.text.as_str()).collect();
            print!("{}", texts.join("\n"));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Apply { dir, inventory, container, log_group, floor } => {
            let (policy, inv, diags) = tools::load_both(&dir, &inventory, now)?;
            for d in diags {
                eprintln!("{d}");
            }
            let opts = CompileOptions {
                log_group,
                inspect_queue: log_group.wrapping_add(1),
                now,
                ..CompileOptions::default()
            };
            let mut outcomes = apply::apply(&policy, &inv, container.as_deref(), &opts);
            if floor {
                outcomes.extend(apply::apply_floors(&policy, &inv, &opts));
            }
            Ok(report(outcomes, "programmed"))
        }
        Cmd::Flush { inventory, container, floor, guard } => {
            let mut code = ExitCode::SUCCESS;
            if let Some(inventory) = inventory {
                let inv =
                    fw_daemon::inventory::load_inventory(&inventory).map_err(|d| Failed(d, Vec::new()))?;
                let mut outcomes = apply::flush(&inv, container.as_deref());
                if floor {
                    outcomes.extend(apply::flush_floors(&inv));
                }
                code = report(outcomes, "flushed");
            }
            if guard {
                fw_daemon::nft::Nft::open(std::path::Path::new("/proc/self/ns/net"), "host floor")
                    .and_then(|mut nft| nft.flush_floor().and_then(|()| nft.flush_guard()))
                    .map_err(|e| Failed::message(format!("error: {e}")))?;
                println!("host-side floor: removed");
            }
            Ok(code)
        }
        Cmd::Run(args) => {
            let own = args.own.then(|| {
                args.pod_info
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(fw_daemon::discovery::own::DEFAULT_POD_INFO))
            });
            let (file, flags) = args.split();
            let file_layer = match &file {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .map_err(|e| Failed::message(format!("{}: error: {e}", p.display())))?;
                    fw_config::parse(p, &text).map_err(Failed::message)?
                }
                None => fw_config::Layer::default(),
            };
            let mut set = fw_config::resolve(flags.over(file_layer), |s| std::path::Path::new(s).exists())
                .map_err(|e| Failed::message(format!("error: {e}")))?;
            init_logging(set.log_format);
            if let Some(pod_info) = &own {
                // The pod is the only container: an inventory of one, and nothing on a host.
                let (id, path) = fw_daemon::discovery::own::write_inventory(pod_info, &set.state_dir)
                    .map_err(|e| Failed::message(format!("error: --self: {e}")))?;
                tracing::info!(pod = %id.name, namespace = ?id.namespace, "sidecar mode: programming this pod's own namespace only");
                set.inventory = Some(path);
                set.docker = None;
                set.cri = None;
                set.kube = None;
                set.containment.floors = false;
                set.containment.guard = None;
            }
            let cfg = daemon::Config {
                rules: std::path::absolute(&set.rules).unwrap_or(set.rules),
                inventory: set.inventory.map(|p| std::path::absolute(&p).unwrap_or(p)),
                docker: set.docker,
                cri: set.cri,
                kube: set.kube,
                unknown_containers: set.unknown_containers,
                state_dir: set.state_dir,
                opts: CompileOptions {
                    log_group: set.log_group,
                    inspect_queue: set.log_group.wrapping_add(1),
                    now,
                    responders: set.containment.floor.responders.clone(),
                    ..CompileOptions::default()
                },
                tick: set.tick,
                resync: set.resync,
                socket: set.socket,
                socket_group: set.socket_group,
                roles: set.roles,
                audit_log: set.audit_log,
                audit_rotation: set.audit_rotation,
                max_flows: set.max_flows,
                containment: set.containment,
                read_limits: set.read_limits,
                max_inventory_bytes: set.max_inventory_bytes,
                own_namespace: own.is_some(),
                pod_info: own,
            };
            daemon::run(cfg).map_err(|e| Failed::message(format!("error: {e}")))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Explain { dir, inventory, from, to, proto, port, icmp_type, json, exit_code } => {
            let answer =
                explain_cmd(&dir, &inventory, &from, &to, proto, port, icmp_type.as_deref(), json, now);
            match (answer, exit_code) {
                (Ok(passes), true) => Ok(ExitCode::from(if passes { 0 } else { 1 })),
                (Ok(_), false) => Ok(ExitCode::SUCCESS),
                (Err(f), true) => {
                    for l in f.lines() {
                        eprintln!("{l}");
                    }
                    Ok(ExitCode::from(2))
                }
                (Err(f), false) => Err(f),
            }
        }
        Cmd::Reach { dir, inventory, from, to, json } => {
            let (policy, inv, _) = tools::load_both(&dir, &inventory, now)?;
            let opts = CompileOptions { now, ..CompileOptions::default() };
            let (who, side) = match (from, to) {
                (Some(c), _) => (c, reach::Side::From),
                (None, Some(c)) => (c, reach::Side::To),
                (None, None) => return Err(Failed::message("give --from or --to")),
            };
            let r = reach::reach(&policy, &inv, &who, side, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).map_err(|e| Failed::message(e.to_string()))?);
            } else {
                print!("{}", reach::render_text(&r));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Completions { shell } => {
            // Rendered in memory first: clap_complete panics on a failed write.
            let mut text = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "fw-daemon",
                &mut text,
            );
            write_generated(&text)
        }
        Cmd::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut text)
                .map_err(|e| Failed::message(format!("man page: {e}")))?;
            write_generated(&text)
        }
    }
}

/// `explain`: prints the answer (one per protocol for `any`); returns whether the traffic
/// passes (for `any`: on some protocol).
#[allow(clippy::too_many_arguments)]
fn explain_cmd(
    dir: &std::path::Path,
    inventory: &std::path::Path,
    from: &str,
    to: &str,
    proto: ProtoArg,
    port: Option<u16>,
    icmp_type: Option<&str>,
    json: bool,
    now: i64,
) -> Result<bool, Failed> {
    let (policy, inv, _) = tools::load_both(dir, inventory, now)?;
    let opts = CompileOptions { now, ..CompileOptions::default() };
    let icmp_type = icmp_type.map(explain::parse_icmp_type).transpose()?;
    let protos: &[&str] = match proto {
        ProtoArg::Tcp => &["tcp"],
        ProtoArg::Udp => &["udp"],
        ProtoArg::Icmp => &["icmp"],
        ProtoArg::Any if icmp_type.is_some() => {
            return Err(Failed::message("--icmp-type needs --proto icmp"))
        }
        ProtoArg::Any => &["tcp", "udp", "icmp"],
    };
    let mut answers = Vec::new();
    for p in protos {
        let p = explain::parse_proto(p)?;
        let port = if p == fw_daemon::ruleset::eval::Proto::Icmp { None } else { port };
        answers.push(explain::explain_icmp(&policy, &inv, from, to, p, port, icmp_type, &opts)?);
    }
    let passes = answers.iter().any(|e| e.verdict != fw_proto::Verdict::Deny);
    if json {
        let text = match answers.as_slice() {
            [one] => serde_json::to_string_pretty(one),
            all => serde_json::to_string_pretty(all),
        };
        println!("{}", text.map_err(|e| Failed::message(e.to_string()))?);
    } else {
        let texts: Vec<String> = answers.iter().map(explain::render_text).collect();
        print!("{}", texts.join("\n"));
    }
    Ok(passes)
}

/// Writes generated text to stdout; a closed pipe (`| head`) is not an error.
fn write_generated(text: &[u8]) -> Result<ExitCode, Failed> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(Failed::message(format!("cannot write the output: {e}"))),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == LogFormat::Json {
        b.json().init();
    } else {
        // Names and labels come from containers: escaped, so they cannot forge log lines.
        b.fmt_fields(fw_daemon::logging::human_fields()).init();
    }
}

fn report(outcomes: Vec<apply::Outcome>, verb: &str) -> ExitCode {
    let mut failed = 0;
    for o in &outcomes {
        match &o.result {
            Ok(t) => println!("{}: {verb} in {:.1} ms", o.container, t.as_secs_f64() * 1000.0),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} containers failed", outcomes.len());
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

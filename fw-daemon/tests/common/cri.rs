//! A real CRI runtime for the node-agent tests: Debian's containerd, its CRI plugin, runc
//! and the CNI bridge plugin, run as an own instance (temporary root, state and socket)
//! inside a dedicated network namespace that stands for the node. Its pods are real
//! sandboxes (a pause container in its own network namespace, a veth onto the node's
//! bridge, an address from host-local IPAM); the pause image is built here from Debian's
//! static busybox, so nothing is pulled. The node namespace has no route out.
//!
//! Everything is removed on drop, even when the test fails: sandboxes, containerd and its
//! shims, mounts under the temporary root, the node namespace.
//!
//! Self-contained (no other test helper), so the benchmarks use it too (`bench/src/bin/cri_pods.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::Channel;

pub const PAUSE_IMAGE: &str = "localhost/fw-pause:1";
const CNI_BIN: &str = "/usr/lib/cni";

/// What a sandbox is, as the test needs it.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub ip: IpAddr,
    pub netns: PathBuf,
}

pub struct Runtime {
    pub dir: PathBuf,
    pub node_ns: String,
    pub socket: PathBuf,
    containerd: Option<Child>,
    rt: tokio::runtime::Runtime,
    client: Option<RuntimeServiceClient<Channel>>,
    pods: Vec<String>,
}

/// Whether this machine has what it runs (containerd, ctr, runc, the CNI bridge,
/// busybox-static); root is the caller's to check.
pub fn tools_present() -> bool {
    let tools = ["containerd", "ctr", "runc", "nsenter", "tar"].iter().all(|t| {
        Command::new(t).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    });
    let files = [format!("{CNI_BIN}/bridge"), format!("{CNI_BIN}/host-local"), "/bin/busybox".into()]
        .iter()
        .all(|f| Path::new(f).exists());
    tools && files
}

/// What `tools_present` asks for, for skip messages.
pub const NEEDS: &str =
    "root, containerd, ctr, runc, nsenter, tar, containernetworking-plugins and busybox-static";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).expect("read blob");
    sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The pause image as an OCI archive: one layer holding the static busybox, whose
/// entrypoint sleeps forever.
fn pause_archive(dir: &Path) -> PathBuf {
    let root = dir.join("pause-rootfs");
    let oci = dir.join("pause-oci");
    let blobs = oci.join("blobs/sha256");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    let layer = dir.join("layer.tar");
    run(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&layer).arg("bin"));
    let blob = |p: &Path| -> (String, u64) {
        let d = sha256(p);
        std::fs::copy(p, blobs.join(&d)).expect("blob");
        (d, std::fs::metadata(p).unwrap().len())
    };
    let (l, ls) = blob(&layer);
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/busybox","sleep","2147483647"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{l}"]}}}}"#
        ),
    )
    .unwrap();
    let (c, cs) = blob(&cfg);
    let man = dir.join("manifest.json");
    std::fs::write(
        &man,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{c}","size":{cs}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{l}","size":{ls}}}]}}"#
        ),
    )
    .unwrap();
    let (m, ms) = blob(&man);
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        oci.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{m}","size":{ms},"annotations":{{"io.containerd.image.name":"{PAUSE_IMAGE}","org.opencontainers.image.ref.name":"1"}}}}]}}"#
        ),
    )
    .unwrap();
    let archive = dir.join("pause.tar");
    run(Command::new("tar").arg("-C").arg(&oci).arg("-cf").arg(&archive).arg("."));
    archive
}

/// containerd in the node's namespace; its log appended to `dir/containerd.log`.
fn spawn_containerd(dir: &Path, node_ns: &str) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("containerd.log")).unwrap();
    // nsenter, not `ip netns exec`: that remounts /sys and hides the cgroups from runc.
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{node_ns}"))
        .arg("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start containerd")
}

fn stop(mut c: Child) {
    let _ =
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(5);
    while c.try_wait().ok().flatten().is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Runtime {
    /// Stops containerd (its shims and sandboxes live on, as on a node whose runtime is
    /// upgraded).
    pub fn stop_runtime(&mut self) {
        if let Some(c) = self.containerd.take() {
            stop(c);
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts it again and waits for its socket.
    pub fn start_runtime(&mut self) {
        self.containerd = Some(spawn_containerd(&self.dir, &self.node_ns));
        let until = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() {
            assert!(Instant::now() < until, "containerd did not start again:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.connect();
    }

    /// containerd up in a fresh node namespace whose bridge hands out `subnet` (a /24), with
    /// the pause image imported.
    pub fn start(tag: &str, subnet: &str) -> Runtime {
        let dir = std::env::temp_dir().join(format!("fw-cri-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("work dir");
        let node_ns = format!("fwcri-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &node_ns]).output();
        run(Command::new("ip").args(["netns", "add", &node_ns]));
        run(Command::new("ip").args(["-n", &node_ns, "link", "set", "lo", "up"]));
        let socket = dir.join("containerd.sock");
        let d = dir.display();
        std::fs::create_dir_all(dir.join("cni")).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd-ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d}/cni"
"#
            ),
        )
        .unwrap();
        // No gateway, no default route: pods reach their node's subnet and nothing else.
        std::fs::write(
            dir.join("cni/10-fw.conflist"),
            format!(
                r#"{{"cniVersion":"0.4.0","name":"fwtest","plugins":[{{"type":"bridge","bridge":"fwcri0","isGateway":false,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],"dataDir":"{d}/ipam"}}}}]}}"#
            ),
        )
        .unwrap();
        let containerd = spawn_containerd(&dir, &node_ns);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut me = Runtime {
            dir,
            node_ns,
            socket,
            containerd: Some(containerd),
            rt,
            client: None,
            pods: Vec::new(),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while !me.socket.exists() {
            assert!(Instant::now() < until, "containerd did not start:\n{}", me.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let archive = pause_archive(&me.dir);
        run(Command::new("ctr")
            .arg("-a")
            .arg(&me.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive));
        me.connect();
        me
    }

    /// A client on the socket, once the CRI service answers (it comes up a moment after the
    /// socket does).
    fn connect(&mut self) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let path = self.socket.clone();
            let attempt = self.rt.block_on(async move {
                let ch = tonic::transport::Endpoint::from_static("http://cri.invalid")
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut c = RuntimeServiceClient::new(ch);
                c.version(VersionRequest { version: "v1".into() }).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            });
            match attempt {
                Ok(c) => {
                    self.client = Some(c);
                    return;
                }
                Err(e) => {
                    assert!(Instant::now() < until, "CRI v1 does not answer: {e}\n{}", self.log());
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn client(&mut self) -> RuntimeServiceClient<Channel> {
        self.client.clone().expect("connected")
    }

    /// `RunPodSandbox` as the kubelet asks it: the pod's labels plus the kubelet's identity
    /// labels, the pod's own network namespace (or the node's with `host_network`).
    pub fn run_pod(
        &mut self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        host_network: bool,
    ) -> Pod {
        let uid = format!("uid-{namespace}-{name}-{}", self.pods.len());
        let mut all: HashMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        all.insert("io.kubernetes.pod.namespace".into(), namespace.into());
        all.insert("io.kubernetes.pod.name".into(), name.into());
        all.insert("io.kubernetes.pod.uid".into(), uid.clone());
        let network = if host_network { NamespaceMode::Node } else { NamespaceMode::Pod };
        let logs = self.dir.join("logs").join(&uid);
        std::fs::create_dir_all(&logs).unwrap();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid,
                namespace: namespace.into(),
                attempt: 0,
            }),
            // The kubelet gives a hostNetwork pod no hostname of its own (no UTS namespace).
            hostname: if host_network { String::new() } else { name.into() },
            log_directory: logs.display().to_string(),
            labels: all,
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut c = self.client();
        let id = self
            .rt
            .block_on(c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox {namespace}/{name}: {e}\n{}", self.log()))
            .into_inner()
            .pod_sandbox_id;
        self.pods.push(id.clone());
        let resp = self
            .rt
            .block_on(
                c.pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: true }),
            )
            .expect("PodSandboxStatus")
            .into_inner();
        let ip =
            resp.status.as_ref().and_then(|s| s.network.as_ref()).map(|n| n.ip.clone()).unwrap_or_default();
        let netns = fw_daemon::discovery::cri::netns_of(&resp.info).expect("a network namespace");
        Pod {
            id,
            ip: if host_network { IpAddr::from([0, 0, 0, 0]) } else { ip.parse().expect("a pod IP") },
            netns,
        }
    }

    /// Stops and removes a sandbox, as the kubelet does when its pod is deleted.
    pub fn remove_pod(&mut self, id: &str) {
        let mut c = self.client();
        let _ = self.rt.block_on(c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() }));
        let _ = self.rt.block_on(c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() }));
        self.pods.retain(|p| p != id);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.pods.clone() {
            self.remove_pod(&id);
        }
        self.client = None;
        if let Some(c) = self.containerd.take() {
            stop(c);
        }
        // Shims outlive containerd by design: end the ones this instance started.
        let me = self.socket.display().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
                let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).contains(&me) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        // Mounts under the root (snapshots, shm), deepest first.
        let prefix = self.dir.display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.node_ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

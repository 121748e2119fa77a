//! A private Orthanc with its DICOMweb plugin for tests: started on a free
//! loopback port with a throwaway storage folder, killed when the guard
//! drops. Shared by `tests/orthanc_dicomweb.rs` and the imaging job tests
//! (`tests/api/imaging_jobs.rs`).
//!
//! Orthanc comes from Debian: `apt-get install -y orthanc orthanc-dicomweb`
//! (`scripts/orthanc.sh install`). If it is missing the tests FAIL with that
//! instruction; set `ONCOHOOKS_SKIP_ORTHANC=1` to skip them deliberately.
//! `ORTHANC_BIN` and `ORTHANC_DICOMWEB_PLUGIN` override the paths.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Orthanc, killed on drop.
pub struct Orthanc {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Orthanc {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn find_orthanc() -> Option<(PathBuf, PathBuf)> {
    let bin = std::env::var_os("ORTHANC_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            [
                "/usr/sbin/Orthanc",
                "/usr/bin/Orthanc",
                "/usr/local/bin/Orthanc",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
        })?;
    let plugin = std::env::var_os("ORTHANC_DICOMWEB_PLUGIN")
        .map(PathBuf::from)
        .or_else(|| {
            // Where the Debian package puts it (`dpkg -L orthanc-dicomweb`).
            let listed = Command::new("dpkg")
                .args(["-L", "orthanc-dicomweb"])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            listed
                .lines()
                .find(|l| l.ends_with("libOrthancDicomWeb.so"))
                .map(PathBuf::from)
                .or_else(|| {
                    let p = PathBuf::from("/usr/share/orthanc/plugins/libOrthancDicomWeb.so");
                    p.exists().then_some(p)
                })
        })?;
    (bin.exists() && plugin.exists()).then_some((bin, plugin))
}

/// Start Orthanc, or `None` when skipping was asked for. Panics with the
/// install instruction when it is not installed.
pub async fn start_orthanc() -> Option<Orthanc> {
    if std::env::var("ONCOHOOKS_SKIP_ORTHANC").as_deref() == Ok("1") {
        eprintln!("ONCOHOOKS_SKIP_ORTHANC=1: skipping the Orthanc DICOMweb test");
        return None;
    }
    let Some((bin, plugin)) = find_orthanc() else {
        panic!(
            "Orthanc with the DICOMweb plugin is not installed. Install it with \
             `apt-get install -y orthanc orthanc-dicomweb` (or scripts/orthanc.sh install), \
             point ORTHANC_BIN / ORTHANC_DICOMWEB_PLUGIN at it, or set ONCOHOOKS_SKIP_ORTHANC=1 to skip"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let storage = dir.path().join("storage");
    let config = serde_json::json!({
        "Name": "oncohooks-test",
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "HttpPort": port,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "DicomServerEnabled": false,
        "HttpCompressionEnabled": false,
        "Plugins": [plugin],
        "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
    });
    let config_path = dir.path().join("orthanc.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let log = std::fs::File::create(dir.path().join("orthanc.log")).unwrap();
    let child = Command::new(&bin)
        .arg(&config_path)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut orthanc = Orthanc { child, port, dir };

    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Some(status) = orthanc.child.try_wait().unwrap() {
            panic!(
                "Orthanc exited ({status}) during start-up:\n{}",
                orthanc.log_tail()
            );
        }
        let ready = http
            .get(format!("{}/dicom-web/studies", orthanc.url()))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!("Orthanc not ready after 60 s:\n{}", orthanc.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(orthanc)
}

pub async fn upload_folder(orthanc: &Orthanc, files: &[PathBuf]) {
    let http = reqwest::Client::new();
    for f in files {
        let resp = http
            .post(format!("{}/instances", orthanc.url()))
            .header("content-type", "application/dicom")
            .body(std::fs::read(f).unwrap())
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "upload of {} failed: {}",
            f.display(),
            resp.status()
        );
    }
}

impl Orthanc {
    /// The DICOMweb root, as an ImagingStudy Endpoint would give it.
    pub fn dicomweb_base(&self) -> String {
        format!("{}/dicom-web", self.url())
    }
}

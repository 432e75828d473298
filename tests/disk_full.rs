//! A full disk, as etcd handles one: writes that would grow the store are refused with
//! `etcdserver: mvcc: database space exceeded` and raise the NOSPACE alarm (`etcdctl alarm list`),
//! reads go on, and once space is back and the alarm is disarmed writes resume without a restart;
//! nothing acknowledged is lost. Runs on a small ext4 file system the test loop-mounts; where the
//! machine refuses to mount one (not root, no loop devices) it says why and skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;
use etcd_client::GetOptions;

/// A loop-mounted ext4 file system of `size_mib`, unmounted when dropped.
struct SmallFs {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size_mib: u64) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("fs.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
        std::fs::File::create(&image).and_then(|f| f.set_len(size_mib << 20)).map_err(|e| e.to_string())?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount_point))?;
        Ok(SmallFs { mount_point, _dir: dir })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?}: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Fills the file system with `path` until fewer than `leave_bytes` are free (or it is full).
fn fill(path: &Path, leave_bytes: u64) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0x5Au8; 1 << 20];
    for _ in 0..4096 {
        if free_bytes(path.parent().unwrap()) < leave_bytes + chunk.len() as u64 {
            break;
        }
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    file.sync_all().expect("sync filler");
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().expect("df");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_raises_nospace_refuses_growth_keeps_reads_and_recovers_after_disarm() {
    let fs = match SmallFs::mount(192) {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("SKIPPED: this machine refuses to mount a small ext4 file system: {reason}");
            return;
        }
    };
    let data = fs.mount_point.join("data");
    let floor = 24u64 << 20;
    let mut server = Server::start_t4(&data, &["--disk-free-min-bytes", &floor.to_string()]);
    let mut client = server.client().await;
    // Leave about 40 MiB above the floor, then write 256 KiB values until the node refuses.
    let filler = fs.mount_point.join("filler");
    fill(&filler, floor + (40 << 20));
    let value = vec![b'v'; 256 * 1024];
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..2000 {
        let key = format!("key/{i:05}");
        match client.put(key.clone(), value.clone(), None).await {
            Ok(_) => acked.push(key),
            Err(e) => {
                refusal = Some(e.to_string());
                break;
            }
        }
    }
    let refusal = refusal.expect("the node refuses writes before the disk is full");
    assert!(refusal.contains("etcdserver: mvcc: database space exceeded"), "etcd's error: {refusal}");
    assert!(!acked.is_empty(), "writes were taken before the floor");

    let (ok, alarms, err) = server.etcdctl(&["alarm", "list"]);
    assert!(ok && alarms.contains("alarm:NOSPACE"), "alarm list: {alarms} {err}");
    let (ok, status, _) = server.etcdctl(&["endpoint", "status", "-w", "json"]);
    assert!(ok && status.contains("NOSPACE"), "status errors list the alarm: {status}");
    // Reads go on; a delete (which adds no data) is taken.
    let all = client.get("key/", Some(GetOptions::new().with_prefix().with_keys_only())).await.expect("read");
    assert_eq!(all.kvs().len(), acked.len());
    client.delete(acked[0].clone(), None).await.expect("a delete under NOSPACE");
    // Still refused while the alarm stands, even once space is back.
    std::fs::remove_file(&filler).expect("free the space");
    let still = client.put("after/free", "v", None).await.expect_err("refused until disarmed");
    assert!(still.to_string().contains("database space exceeded"), "{still}");

    let (ok, out, err) = server.etcdctl(&["alarm", "disarm"]);
    assert!(ok, "disarm: {out} {err}");
    let (ok, alarms, _) = server.etcdctl(&["alarm", "list"]);
    assert!(ok && !alarms.contains("NOSPACE"), "disarmed: {alarms}");
    client.put("after/disarm", "v", None).await.expect("writes resume without a restart");

    // Nothing acknowledged was lost, across a restart too.
    server.stop();
    let server = Server::start_t4(&data, &["--disk-free-min-bytes", &floor.to_string()]);
    let mut client = server.client().await;
    let all = client.get("key/", Some(GetOptions::new().with_prefix().with_keys_only())).await.expect("read");
    let keys: Vec<String> = all.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
    assert_eq!(keys, acked[1..].to_vec(), "every acknowledged put but the deleted one");
    assert_eq!(client.get("after/disarm", None).await.unwrap().kvs().len(), 1);
    drop(server);
}

//! T4 embedded in a tokio program: open a node on a local directory, write, read, run a
//! compare-and-swap transaction, and close it.
//!
//! Run with `cargo run --example embedded`.

use t4::{Compare, CompareOp, Config, Node, Txn, TxnOp};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), t4::Error> {
    let dir = std::env::temp_dir().join(format!("t4-embedded-example-{}", std::process::id()));
    let node = Node::open(Config::new(&dir))?;

    let revision = node.put("config/feature-x", "off").await?;
    println!("wrote config/feature-x at revision {revision}");

    // Flip the flag only if nobody changed it since we read it (compare-and-swap on mod_revision).
    let current = node.get("config/feature-x").await?.expect("just written");
    let cas = Txn::new()
        .when([Compare::mod_revision("config/feature-x", CompareOp::Equal, current.mod_revision)])
        .and_then([TxnOp::put("config/feature-x", "on")]);
    let outcome = node.txn(cas).await?;
    println!("compare-and-swap succeeded: {} (revision {})", outcome.succeeded, outcome.revision);

    for kv in node.list("config/").await? {
        println!("{} = {}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
    }
    node.close().await?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

//! Smallest use of the candidate, to compare binary size contributions.
fn main() {
    let dir = std::env::temp_dir().join(format!("min-fjall-{}", std::process::id()));
    let db = fjall::Database::builder(&dir).open().unwrap();
    let ks = db.keyspace("t", fjall::KeyspaceCreateOptions::default).unwrap();
    let mut b = db.batch().durability(Some(fjall::PersistMode::SyncAll));
    b.insert(&ks, "a", vec![1u8]);
    b.commit().unwrap();
    println!("{}", ks.iter().count());
    drop(ks);
    drop(db);
    std::fs::remove_dir_all(dir).unwrap();
}

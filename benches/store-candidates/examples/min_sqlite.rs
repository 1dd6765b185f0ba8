//! Smallest use of the candidate, to compare binary size contributions.
fn main() {
    let dir = std::env::temp_dir().join(format!("min-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conn = rusqlite::Connection::open(dir.join("db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)").unwrap();
    conn.execute("INSERT INTO t VALUES (?1, ?2)", ("a", vec![1u8])).unwrap();
    let n: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    println!("{n}");
    drop(conn);
    std::fs::remove_dir_all(dir).unwrap();
}

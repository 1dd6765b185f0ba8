//! Smallest use of the candidate, to compare binary size contributions.
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
const T: TableDefinition<&str, &[u8]> = TableDefinition::new("t");
fn main() {
    let dir = std::env::temp_dir().join(format!("min-redb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = redb::Database::create(dir.join("db")).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(T).unwrap().insert("a", [1u8].as_slice()).unwrap();
    tx.commit().unwrap();
    println!("{}", db.begin_read().unwrap().open_table(T).unwrap().len().unwrap());
    drop(db);
    std::fs::remove_dir_all(dir).unwrap();
}

use super::*;

kopek_store::conformance_tests!(async {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = JournalStore::open(dir.path()).expect("open the journal store");
    Some((store, dir))
});

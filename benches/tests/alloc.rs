//! Encoding allocates per body, not per update: counted with dhat's heap statistics.

use engage_benches::{to_update, workload};
use engage_core::batch::Batcher;
use engage_core::{BatchConfig, Endpoint, Token, Update};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// dhat allows one profiler at a time; tests run in parallel.
static ONE_PROFILER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn blocks_to_encode(updates: &[Update], batcher: &mut Batcher) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    let mut bodies = Vec::with_capacity(8);
    for u in updates {
        if let Some(b) = batcher.push(u).unwrap() {
            bodies.push(b);
        }
    }
    bodies.extend(batcher.finish());
    let after = dhat::HeapStats::get().total_blocks;
    assert_eq!(bodies.iter().map(|b| b.len()).sum::<usize>(), updates.len());
    after - before
}

#[test]
fn no_allocation_per_update_beyond_the_body_buffer() {
    let _one = ONE_PROFILER.lock().unwrap_or_else(|e| e.into_inner());
    let _profiler = dhat::Profiler::builder().testing().build();
    let updates: Vec<Update> = workload(8000, 3).iter().map(to_update).collect();
    let mut batcher = Batcher::new(BatchConfig::new(
        Token::new("tok").unwrap(),
        Endpoint::Engage,
    ));
    // First run: the buffers grow to size.
    let cold = blocks_to_encode(&updates[..4000], &mut batcher);
    // Later bodies are sized from the previous one: a few blocks per 2000-update body.
    let warm = blocks_to_encode(&updates[4000..], &mut batcher);
    println!("blocks allocated: cold {cold}, warm {warm} for 4000 updates (2 bodies each)");
    assert!(cold < 60, "cold: {cold} blocks for 4000 updates");
    assert!(warm <= 8, "warm: {warm} blocks for 4000 updates");
}

/// Building is where an update is encoded: from a user's struct, `set_from` allocates the
/// record's buffer and nothing else (the id is written into it, not kept as a `String`).
#[test]
fn building_from_a_struct_allocates_one_block_per_update() {
    let _one = ONE_PROFILER.lock().unwrap_or_else(|e| e.into_inner());
    let _profiler = dhat::Profiler::builder().testing().build();
    let people = engage_benches::customers(2000, 5);
    // The first update on a thread also allocates the thread's scratch buffer.
    let first = Update::user("first").set_from(&people[0].1).unwrap();
    let before = dhat::HeapStats::get().total_blocks;
    let updates: Vec<Update> = people
        .iter()
        .map(|(id, c)| Update::user(id.as_str()).set_from(c).unwrap())
        .collect();
    let blocks = dhat::HeapStats::get().total_blocks - before;
    // One more block for the Vec of updates itself.
    let per_update = (blocks - 1) as f64 / updates.len() as f64;
    println!("blocks allocated while building: {per_update:.2} per update");
    assert!(per_update <= 1.0, "{per_update} blocks per update");
    // The tree path, for comparison: a String per name and per string value.
    let before = dhat::HeapStats::get().total_blocks;
    let tree: Vec<Update> = people
        .iter()
        .map(|(id, c)| {
            Update::user(id.as_str()).set(engage_core::Properties::from_serialize(c).unwrap())
        })
        .collect();
    let tree_blocks = (dhat::HeapStats::get().total_blocks - before - 1) as f64 / tree.len() as f64;
    println!("through Properties: {tree_blocks:.2} per update");
    assert!(tree_blocks > per_update);
    drop(first);
}

//! Encoding allocates per body, not per update: counted with dhat's heap statistics.

use engage_benches::{to_update, workload};
use engage_core::batch::Batcher;
use engage_core::{BatchConfig, Endpoint, Token, Update};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// dhat allows one profiler at a time, and its counts are the whole process's: the checks
/// run one after the other in one test, so that no other test's thread (or the harness
/// reporting a finished one) allocates while a count is taken.
#[test]
fn allocation_counts() {
    no_allocation_per_update_beyond_the_body_buffer();
    building_from_a_struct_allocates_one_block_per_update();
    pushing_structs_straight_into_batches_allocates_per_body_only();
    pushing_json_lines_allocates_per_body_only();
}

/// Blocks a warm batcher allocates per 2000-update body: the body, its record list, the
/// shared header of the `Bytes` it is frozen into, and the box a closed batch is handed
/// back in inside engage-core (so that the common answer to a push, "kept", is small).
/// Each count below also holds one block of its own: the list the bodies are kept in.
const BLOCKS_PER_BODY: u64 = 4;

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

fn no_allocation_per_update_beyond_the_body_buffer() {
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
    assert!(
        warm <= 2 * BLOCKS_PER_BODY + 1,
        "warm: {warm} blocks for 4000 updates"
    );
}

/// Building is where an update is encoded: from a user's struct, `set_from` allocates the
/// record's buffer and nothing else (the id is written into it, not kept as a `String`).
fn building_from_a_struct_allocates_one_block_per_update() {
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

/// Structs pushed straight into batches (`Batcher::push_set_from`): no block per update,
/// only the bodies' (the "no allocation per update in steady state").
fn pushing_structs_straight_into_batches_allocates_per_body_only() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let people = engage_benches::customers(8000, 9);
    let mut batcher = Batcher::new(BatchConfig::new(
        Token::new("tok").unwrap(),
        Endpoint::Engage,
    ));
    let mut push = |people: &[(String, engage_benches::Customer)]| {
        let before = dhat::HeapStats::get().total_blocks;
        let mut bodies = Vec::with_capacity(8);
        for (id, c) in people {
            let profile = engage_core::model::ProfileRef::User(id);
            bodies.extend(batcher.push_set_from(profile, c).unwrap());
        }
        bodies.extend(batcher.finish());
        assert_eq!(bodies.iter().map(|b| b.len()).sum::<usize>(), people.len());
        dhat::HeapStats::get().total_blocks - before
    };
    let cold = push(&people[..4000]);
    let warm = push(&people[4000..]);
    println!("blocks allocated: cold {cold}, warm {warm} for 4000 structs (2 bodies each)");
    assert!(
        warm <= 2 * BLOCKS_PER_BODY + 1,
        "warm: {warm} blocks for 4000 structs"
    );
}

/// NDJSON lines pushed as text (`Batcher::push_json`, the CLI's path), compact and spaced:
/// read in one pass straight into the body, no block per line once the scratch is warm.
fn pushing_json_lines_allocates_per_body_only() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let lines: Vec<String> = workload(8000, 11)
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let compact = engage_benches::to_value(r, "tok").to_string();
            // Half of them spaced, so that both ways through the reader are counted.
            match i % 2 {
                0 => compact,
                _ => compact.replace(',', ", ").replace(':', ": "),
            }
        })
        .collect();
    let mut batcher = Batcher::new(BatchConfig::new(
        Token::new("tok").unwrap(),
        Endpoint::Engage,
    ));
    let mut push = |lines: &[String]| {
        let before = dhat::HeapStats::get().total_blocks;
        let mut bodies = Vec::with_capacity(8);
        for line in lines {
            bodies.extend(batcher.push_json(line.as_bytes()).unwrap());
        }
        bodies.extend(batcher.finish());
        assert_eq!(bodies.iter().map(|b| b.len()).sum::<usize>(), lines.len());
        dhat::HeapStats::get().total_blocks - before
    };
    let cold = push(&lines[..4000]);
    let warm = push(&lines[4000..]);
    println!("blocks allocated: cold {cold}, warm {warm} for 4000 lines (2 bodies each)");
    assert!(
        warm <= 2 * BLOCKS_PER_BODY + 1,
        "warm: {warm} blocks for 4000 lines"
    );
}

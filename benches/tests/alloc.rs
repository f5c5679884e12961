//! Encoding allocates per body, not per update: counted with dhat's heap statistics.

use engage_benches::{to_update, workload};
use engage_core::{BatchConfig, Batcher, Endpoint, Token, Update};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

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

use sluice_record::{BatchBuilder, Compression, OwnedRecord, RecordBatch, RecordRules};
use std::time::Instant;
fn main() {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..4545 {
        b.push(OwnedRecord::new(
            None,
            Some(vec![b'x'; 100]),
            1_700_000_000_000 + i,
        ));
    }
    let bytes = b.build().unwrap();
    let batch = RecordBatch::parse(&bytes).unwrap();
    let rules = RecordRules {
        require_keys: false,
        timestamps: Some((0, i64::MAX / 2)),
        max_decompressed: 64 << 20,
    };
    for _ in 0..100 {
        batch.check_records(&rules).unwrap();
    }
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        batch.check_records(&rules).unwrap();
    }
    let el = t.elapsed();
    println!(
        "check_records: {:.2} ns/record",
        el.as_nanos() as f64 / (n as f64 * 4545.0)
    );
    let t = Instant::now();
    for _ in 0..n {
        batch.validate().unwrap();
    }
    let el = t.elapsed();
    println!(
        "validate (crc): {:.2} ns/record",
        el.as_nanos() as f64 / (n as f64 * 4545.0)
    );
}

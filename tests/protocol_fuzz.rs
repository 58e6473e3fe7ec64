//! The worker protocol's decoder against arbitrary bytes: a malformed, truncated or hostile
//! frame is an error, never a panic or an unbounded allocation; valid messages round-trip.

use hipinfer::isolation::{FromWorker, ToWorker, WorkerReport};
use hipinfer::model::Encoding;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ToWorker::read(&mut bytes.as_slice());
        let _ = FromWorker::read(&mut bytes.as_slice());
    }

    #[test]
    fn arbitrary_bodies_never_panic(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ToWorker::decode(tag, &body);
        let _ = FromWorker::decode(tag, &body);
    }

    #[test]
    fn a_valid_frame_with_garbage_inside_is_an_error_not_a_panic(
        ids in proptest::collection::vec(any::<u32>(), 0..40),
        flip in any::<usize>(),
        value in any::<u8>(),
    ) {
        let message = ToWorker::Step {
            id: 1,
            inputs: vec![Encoding { type_ids: vec![0; ids.len()], ids }],
            readout: hipinfer::model::Readout::Pooled,
            requests: vec![1, 2],
        };
        let mut bytes = Vec::new();
        message.write(&mut bytes).unwrap();
        let at = flip % bytes.len();
        bytes[at] = value;
        let _ = ToWorker::read(&mut bytes.as_slice());
    }

    #[test]
    fn steps_and_answers_round_trip(
        inputs in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 0..20), 0..6),
        rows in 0usize..5,
        cols in 1usize..9,
        seed in any::<u32>(),
    ) {
        let step = ToWorker::Step {
            id: seed as u64,
            inputs: inputs.iter().map(|ids| Encoding { ids: ids.clone(), type_ids: vec![1; ids.len()] }).collect(),
            readout: hipinfer::model::Readout::PerToken,
            requests: (0..inputs.len() as u64).collect(),
        };
        let mut bytes = Vec::new();
        step.write(&mut bytes).unwrap();
        prop_assert_eq!(ToWorker::read(&mut bytes.as_slice()).unwrap(), step);

        let embeddings: Vec<Vec<f32>> = (0..rows)
            .map(|r| (0..cols).map(|c| (seed as f32) * 0.5 + (r * cols + c) as f32).collect())
            .collect();
        let done = FromWorker::StepDone { id: 3, embeddings, report: WorkerReport::default() };
        let mut bytes = Vec::new();
        done.write(&mut bytes).unwrap();
        prop_assert_eq!(FromWorker::read(&mut bytes.as_slice()).unwrap(), done);
    }
}

#[test]
fn a_huge_declared_count_does_not_allocate() {
    // A step frame claiming 2³² − 1 inputs in a 20-byte body.
    let mut body = Vec::new();
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend_from_slice(&[0u8; 8]);
    assert!(ToWorker::decode(2, &body).is_err());
}

#[test]
fn billions_of_empty_embeddings_are_refused_not_allocated() {
    // A step answer claiming 2³² − 1 embeddings of 0 values each: 16 bytes of body that would
    // otherwise ask for ~100 GB of empty vectors.
    let mut body = Vec::new();
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    let error = FromWorker::decode(67, &body).unwrap_err();
    assert!(error.to_string().contains("do not fit"), "{error}");
    // One row that claims no values at all: refused too (no model has empty embeddings).
    let mut body = Vec::new();
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    let error = FromWorker::decode(67, &body).unwrap_err();
    assert!(error.to_string().contains("no dimensions"), "{error}");
}

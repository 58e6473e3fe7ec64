//! Every HIP 5.2 error code maps to the recovery class of `docs/hip-errors.md`.

use hipinfer::error::codes::HIP_CODES;
use hipinfer::{HipError, Op, Recovery};

/// The classification table of `hip-errors.md`, written out independently of the crate's table.
fn documented_class(code: i32) -> Option<Recovery> {
    use Recovery::*;
    let class = match code {
        1 | 3 | 4 => Fatal,
        2 => Reclaim,
        5..=8 => Benign,
        9 | 12 | 13 | 17 | 21 | 52 | 98 => Fatal,
        35 => Fatal,
        53 => Reset,
        100 | 101 => Fatal,
        200 | 209 | 218 => Fatal,
        201 => Fatal,
        202 => Benign,
        205 | 206 => Fatal,
        207 | 208 | 210..=213 | 219 => Fatal,
        214 => Reset,
        215 => Fatal,
        216 => Retry,
        217 => Fatal,
        300..=303 => Fatal,
        304 => Retry,
        400 | 401 | 500 => Fatal,
        600 => Poll,
        700 => Reset,
        701 => Fatal,
        702 => Reset,
        704 | 712 => Benign,
        705 | 713 | 708 => Fatal,
        709 | 710 => Reset,
        719 => Reset,
        720 | 801 => Fatal,
        900..=908 | 910 => Fatal,
        999 => Probe,
        1052 => Reclaim,
        1053 => Probe,
        1054 => Fatal,
        _ => return None,
    };
    Some(class)
}

const DOCUMENTED_CODES: &[i32] = &[
    1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 17, 21, 35, 52, 53, 98, 100, 101, 200, 201, 202, 205, 206,
    207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 300, 301, 302, 303, 304, 400,
    401, 500, 600, 700, 701, 702, 704, 705, 708, 709, 710, 712, 713, 719, 720, 801, 900, 901, 902,
    903, 904, 905, 906, 907, 908, 910, 999, 1052, 1053, 1054,
];

#[test]
fn every_documented_code_has_its_class_and_a_name_for_every_op() {
    for &code in DOCUMENTED_CODES {
        let expected = documented_class(code).unwrap();
        for op in Op::ALL {
            let error = HipError::new(code, op);
            let expected = if code == 719 && op == Op::Launch {
                Recovery::Probe
            } else {
                expected
            };
            assert_eq!(error.recovery(), expected, "code {code} from {op}");
            assert!(
                error.name().starts_with("hipError"),
                "code {code} has no name"
            );
            assert_ne!(
                error.name(),
                "hipErrorUnrecognized",
                "code {code} has no name"
            );
        }
    }
}

#[test]
fn the_crate_table_holds_exactly_the_documented_codes() {
    let mut table: Vec<i32> = HIP_CODES
        .iter()
        .map(|c| c.code)
        .filter(|&c| c != 0)
        .collect();
    table.sort();
    assert_eq!(table, DOCUMENTED_CODES);
    assert!(
        HIP_CODES.windows(2).all(|w| w[0].code < w[1].code),
        "table must stay sorted"
    );
}

#[test]
fn names_match_hip() {
    let cases = [
        (2, "hipErrorOutOfMemory"),
        (100, "hipErrorNoDevice"),
        (101, "hipErrorInvalidDevice"),
        (304, "hipErrorOperatingSystem"),
        (600, "hipErrorNotReady"),
        (700, "hipErrorIllegalAddress"),
        (719, "hipErrorLaunchFailure"),
        (999, "hipErrorUnknown"),
        (1052, "hipErrorRuntimeMemory"),
    ];
    for (code, name) in cases {
        assert_eq!(HipError::new(code, Op::Launch).name(), name);
    }
}

#[test]
fn launch_failure_depends_on_where_it_was_seen() {
    assert_eq!(HipError::new(719, Op::Launch).recovery(), Recovery::Probe);
    for op in [
        Op::Synchronize,
        Op::CopyDeviceToHost,
        Op::CopyHostToDevice,
        Op::Query,
    ] {
        assert_eq!(
            HipError::new(719, op).recovery(),
            Recovery::Reset,
            "719 from {op}"
        );
    }
}

#[test]
fn unknown_codes_are_probed_and_keep_their_number() {
    for code in [-1, 10, 99, 703, 1100, i32::MAX] {
        let error = HipError::new(code, Op::Synchronize);
        assert_eq!(error.recovery(), Recovery::Probe, "code {code}");
        assert_eq!(error.code(), code);
        assert_eq!(error.name(), "hipErrorUnrecognized");
    }
}

#[test]
fn questions_answer_by_class() {
    let oom = HipError::new(2, Op::Allocate);
    assert!(oom.is_recoverable() && !oom.is_permanent());
    let not_ready = HipError::new(600, Op::Query);
    assert!(not_ready.is_recoverable());
    let illegal = HipError::new(700, Op::Synchronize);
    assert!(!illegal.is_recoverable() && !illegal.is_permanent() && illegal.needs_reset());
    let invalid = HipError::new(1, Op::Launch);
    assert!(!invalid.is_recoverable() && invalid.is_permanent());
    let unknown = HipError::new(999, Op::Query);
    assert!(!unknown.is_recoverable() && !unknown.is_permanent());
}

#[test]
fn display_is_one_line_with_code_name_op_and_context() {
    let error = HipError::new(2, Op::Allocate)
        .with_device(1)
        .with_bytes(4096)
        .with_detail("pool empty");
    let text = error.to_string();
    assert_eq!(
        text,
        "HIP error 2 (hipErrorOutOfMemory) during allocate [recovery: reclaim, device 1, 4096 bytes]: pool empty"
    );
    let launch = HipError::new(98, Op::Launch).with_kernel("gemm_bias");
    assert!(launch.to_string().contains("kernel gemm_bias"));
    assert!(!text.contains('\n'));
}

#[test]
fn hip_error_is_send_sync_and_an_error() {
    fn check<T: Send + Sync + std::error::Error + 'static>() {}
    check::<HipError>();
}

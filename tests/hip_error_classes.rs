//! Every HIP 5.2 error code maps to the recovery class `../shared/docs/hip-errors.md` gives it
//! (the test reads that document), and benign codes count as success.

use hipinfer::error::codes::HIP_CODES;
use hipinfer::{HipError, Op, Recovery};

/// `../shared/docs/hip-errors.md` (or `$HIPINFER_SHARED/docs/hip-errors.md`): the project's
/// reference for what every HIP code means. The test reads it, so the crate's table can never
/// drift from it unnoticed.
fn documentation() -> String {
    let shared = std::env::var_os("HIPINFER_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let path = shared.join("docs/hip-errors.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} cannot be read ({e}): the classes are checked against it (set HIPINFER_SHARED \
             to the folder holding docs/)",
            path.display()
        )
    })
}

/// A class as the document writes it: the first class name in the cell ("Retry ×2, then
/// Probe" is Retry, escalated by the retry layer).
fn class_named(cell: &str) -> Option<Recovery> {
    use Recovery::*;
    let classes = [
        ("Fatal", Fatal),
        ("Retry", Retry),
        ("Reclaim", Reclaim),
        ("Reset", Reset),
        ("Poll", Poll),
        ("Probe", Probe),
        ("Benign", Benign),
    ];
    classes
        .iter()
        .filter_map(|(name, class)| cell.find(name).map(|at| (at, *class)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, class)| class)
}

/// What the document says of each code: `(code, class when returned by a launch, class
/// otherwise)`, from the table "Every code (HIP 5.2)".
fn documented() -> Vec<(i32, Recovery, Recovery)> {
    let text = documentation();
    let table = text
        .split("## Every code")
        .nth(1)
        .expect("hip-errors.md has the section \"Every code\"");
    let mut rows = Vec::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let (codes, class) = (cells[0], cells[cells.len() - 1]);
        if codes == "code" || codes.starts_with("---") || codes == "0" {
            continue;
        }
        // "from the launch call: Probe; from synchronize/copy/query: Reset"
        let (launch, other) = match class.split_once("from the launch call:") {
            Some((_, rest)) => {
                let (launch, other) = rest.split_once(';').expect("two places");
                (class_named(launch), class_named(other))
            }
            None => (class_named(class), class_named(class)),
        };
        let (launch, other) = (
            launch.unwrap_or_else(|| panic!("no class in {line}")),
            other.unwrap_or_else(|| panic!("no class in {line}")),
        );
        for part in codes.split(',').map(str::trim) {
            let range: Vec<i32> = match part.split_once('–') {
                Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect(),
                None => vec![part
                    .parse()
                    .unwrap_or_else(|_| panic!("code {part} in {line}"))],
            };
            rows.extend(range.into_iter().map(|code| (code, launch, other)));
        }
    }
    rows.sort_by_key(|r| r.0);
    assert!(
        rows.len() > 60,
        "the table was not found whole: {} rows",
        rows.len()
    );
    rows
}

#[test]
fn every_documented_code_has_its_class_and_a_name_for_every_op() {
    for (code, launch, other) in documented() {
        for op in Op::ALL {
            let error = HipError::new(code, op);
            let expected = if op == Op::Launch { launch } else { other };
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
    let documented: Vec<i32> = documented().iter().map(|r| r.0).collect();
    assert_eq!(table, documented);
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

#[test]
fn benign_codes_are_treated_as_success_and_nothing_else_is() {
    for code in [0, 5, 6, 7, 8, 202, 704, 712] {
        assert!(HipError::check(code, Op::Launch).is_ok(), "code {code}");
    }
    for code in [1, 2, 304, 600, 700, 719, 999, 12345] {
        let error = HipError::check(code, Op::Synchronize).unwrap_err();
        assert_eq!(error.code(), code);
    }
}

#[test]
fn cuda_only_codes_are_classified_and_never_shadow_a_hip_code() {
    use hipinfer::error::codes::CUDA_ONLY_CODES;

    assert!(CUDA_ONLY_CODES.windows(2).all(|w| w[0].code < w[1].code));
    for info in CUDA_ONLY_CODES {
        assert!(
            HIP_CODES.iter().all(|hip| hip.code != info.code),
            "{} shadows a HIP code",
            info.code
        );
    }
    let class = |code| HipError::new(code, Op::Launch).recovery();
    for code in [714, 715, 716, 717, 718, 220] {
        assert_eq!(class(code), Recovery::Reset, "code {code}");
    }
    for code in [221, 222, 223, 34, 36, 804] {
        assert_eq!(class(code), Recovery::Fatal, "code {code}");
    }
    assert_eq!(class(46), Recovery::Retry);
    // Shared codes keep their HIP meaning.
    assert_eq!(class(700), Recovery::Reset);
    assert_eq!(
        HipError::new(222, Op::ModuleLoad).name(),
        "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"
    );
}

use super::*;

#[test]
fn targets() {
    assert_eq!(
        Target::parse("ram:64MiB").ok(),
        Some(Target::Ram { bytes: 64 << 20 })
    );
    assert_eq!(
        Target::parse("ram:1G").ok(),
        Some(Target::Ram { bytes: 1 << 30 })
    );
    assert!(Target::parse("ram:lots").is_err());
    assert!(matches!(Target::parse("0000:03:00.0"), Ok(Target::Nvme(_))));
    assert!(matches!(
        Target::parse("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420"),
        Ok(Target::Nvme(_))
    ));
    assert_eq!(
        Target::parse("/dev/loop0").ok(),
        Some(Target::Path("/dev/loop0".into()))
    );
    assert!(Target::parse("  ").is_err());
}

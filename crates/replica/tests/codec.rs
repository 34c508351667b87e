//! Message and metadata codecs: round trips, corruption detection, and no panic on arbitrary bytes.
//! Cases: `PROPTEST_CASES` (default 256).

use proptest::prelude::*;
use replica::*;

fn all_msgs() -> Vec<Msg> {
    let gen = Gen {
        current: 0x1235,
        bitmap: 0x99,
        history: [7, 8],
    };
    vec![
        Msg::Hello(Hello {
            node_id: 3,
            size: 1 << 30,
            granularity: 4096,
            protocol: Protocol::C,
            gen,
            role: Role::Primary,
            disk: DiskState::UpToDate,
            crashed_primary: true,
            discard_my_data: false,
            allow_two_primaries: true,
            dirty_bits: 42,
        }),
        Msg::Data {
            seq: 9,
            offset: 4096,
            fua: true,
            data: vec![1, 2, 3].into(),
        },
        Msg::RecvAck { seq: 1 },
        Msg::WriteAck { seq: 2 },
        Msg::NegAck { seq: 3 },
        Msg::Barrier {
            epoch: 4,
            before_seq: 10,
        },
        Msg::BarrierAck { epoch: 4 },
        Msg::Bitmap {
            start_word: 5,
            words: vec![u64::MAX, 0, 3],
        },
        Msg::BitmapDone,
        Msg::ResyncData {
            offset: 8192,
            data: vec![9; 100].into(),
        },
        Msg::ResyncAck {
            offset: 8192,
            len: 100,
        },
        Msg::ResyncDone { gen },
        Msg::VerifyReq {
            offset: 0,
            len: 65536,
            digest: 0xdead_beef,
        },
        Msg::VerifyReply {
            offset: 0,
            len: 65536,
            equal: false,
        },
        Msg::State {
            role: Role::Secondary,
            disk: DiskState::Outdated,
        },
        Msg::Ping,
        Msg::PingAck,
    ]
}

#[test]
fn every_message_round_trips_and_streams() {
    let mut stream = Vec::new();
    for m in all_msgs() {
        let b = m.encode();
        assert_eq!(Msg::decode(&b).unwrap(), Some((m.clone(), b.len())));
        // Any proper prefix asks for more bytes.
        for cut in [0, 5, 11, b.len() - 1] {
            if cut < b.len() {
                assert_eq!(Msg::decode(&b[..cut]).unwrap(), None);
            }
        }
        let (h, p) = m.clone().encode_parts();
        assert_eq!([h, p.to_vec()].concat(), b, "encode_parts of {m:?}");
        // The link reader's path: the frame is cut out and the payload shared with it.
        let frame = bytes::Bytes::from(b.clone());
        assert_eq!(Msg::frame_len(&frame).unwrap(), Some(b.len()));
        assert_eq!(Msg::decode_frame(&frame).unwrap(), m);
        if let Msg::Data { data, .. } | Msg::ResyncData { data, .. } =
            Msg::decode_frame(&frame).unwrap()
        {
            let inside = frame.as_ptr_range();
            assert!(
                data.is_empty() || inside.contains(&data.as_ptr()),
                "payload is a view of the frame"
            );
        }
        // A frame cut short or with bytes beyond it is refused.
        assert!(Msg::decode_frame(&frame.slice(..b.len() - 1)).is_err());
        let mut longer = b.clone();
        longer.push(0);
        assert!(Msg::decode_frame(&bytes::Bytes::from(longer)).is_err());
        stream.extend_from_slice(&b);
    }
    let mut pos = 0;
    let mut n = 0;
    while let Some((_, used)) = Msg::decode(&stream[pos..]).unwrap() {
        pos += used;
        n += 1;
    }
    assert_eq!((pos, n), (stream.len(), all_msgs().len()));
}

#[test]
fn malformed_frames_are_errors() {
    let mut b = Msg::Ping.encode();
    b[0] ^= 1;
    assert!(matches!(Msg::decode(&b), Err(DecodeError::BadMagic(_))));
    let mut b = Msg::Ping.encode();
    b[5] = 9;
    assert_eq!(Msg::decode(&b), Err(DecodeError::BadVersion(9)));
    let mut b = Msg::Ping.encode();
    b[7] = 200;
    assert_eq!(Msg::decode(&b), Err(DecodeError::UnknownType(200)));
    let mut b = Msg::Ping.encode();
    b[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(Msg::decode(&b), Err(DecodeError::TooLarge(_))));
    // A WriteAck with a trailing byte.
    let mut b = Msg::WriteAck { seq: 1 }.encode();
    b.push(0);
    b[11] += 1;
    assert_eq!(Msg::decode(&b), Err(DecodeError::Malformed(4)));
    // A Hello with a role of 7.
    let h = all_msgs().remove(0).encode();
    let mut bad = h.clone();
    bad[12 + 4 + 8 + 4 + 1 + 32] = 7;
    assert_eq!(Msg::decode(&bad), Err(DecodeError::Malformed(1)));
}

#[test]
fn metadata_round_trips_and_detects_corruption() {
    let mut m = Metadata::fresh(10 << 20, 4096, 7);
    m.gen = Gen {
        current: 0x1001,
        bitmap: 0x2000,
        history: [3, 4],
    };
    m.disk = DiskState::UpToDate;
    m.flags.primary = true;
    m.bitmap.set_range(12345, 70000);
    for e in 0..9 {
        m.al.touch(e * (4 << 20) % (10 << 20), 1);
    }
    let b = m.encode();
    let d = Metadata::decode(&b).unwrap();
    assert_eq!(d, m);
    assert_eq!(d.bitmap.count(), m.bitmap.count());
    for i in [0usize, 6, 40, b.len() / 2, b.len() - 1] {
        let mut c = b.clone();
        c[i] ^= 0x10;
        assert!(Metadata::decode(&c).is_err(), "flip at {i} not detected");
    }
    assert!(matches!(
        Metadata::decode(&b[..b.len() - 8]),
        Err(MetaError::Truncated { .. })
    ));
    let e = Metadata::decode(&[0u8; 200]).unwrap_err();
    assert!(e.to_string().contains("create-md"), "{e}");
}

#[test]
fn activity_log_records_round_trip_and_detect_corruption() {
    let mut al = ActivityLog::new(5);
    for e in [3u64, 9, 1, 9, 4] {
        al.touch(e * (4 << 20), 1);
    }
    let b = al.encode_record(77);
    assert_eq!(b.len(), ActivityLog::record_len(5));
    let (seq, d) = ActivityLog::decode_record(&b).unwrap();
    assert_eq!((seq, &d), (77, &al));
    assert_eq!(d.extents().collect::<Vec<_>>(), vec![3, 1, 9, 4]);
    for i in 0..b.len() {
        let mut c = b.clone();
        c[i] ^= 0x01;
        assert!(
            ActivityLog::decode_record(&c).is_err(),
            "flip at {i} not detected"
        );
    }
    assert!(matches!(
        ActivityLog::decode_record(&b[..b.len() - 1]),
        Err(MetaError::Truncated { .. })
    ));
    // A zeroed slot (a journal never written) is no record.
    assert!(ActivityLog::decode_record(&vec![0u8; 4096]).is_err());
}

#[test]
fn bitmap_ranges() {
    let mut b = Bitmap::new(10_000, 4096); // 3 bits, the last partial
    assert_eq!(b.bits(), 3);
    assert_eq!(b.set_range(4095, 2), 2);
    assert_eq!(b.count(), 2);
    assert_eq!(b.clear_range(0, 4096), 1);
    assert_eq!(
        b.clear_range(4097, 8000),
        0,
        "partial blocks are not cleared"
    );
    assert_eq!(b.clear_range(4096, 10_000), 1);
    b.set_all();
    assert_eq!(b.count(), 3);
    assert_eq!(
        b.clear_range(8192, 1808),
        1,
        "the partial last block clears up to the end"
    );
    assert_eq!(b.next_set(0), Some(0));
    let mut c = Bitmap::new(10_000, 4096);
    c.merge_words(0, &[u64::MAX]);
    assert_eq!(c.count(), 3, "bits beyond the end are masked");
    let mut al = ActivityLog::new(2);
    assert!(al.touch(0, 1));
    assert!(!al.touch(10, 1));
    assert!(al.touch(5 << 20, 1));
    assert!(al.touch(9 << 20, 1)); // evicts extent 0
    assert_eq!(al.extents().collect::<Vec<_>>(), vec![1, 2]);
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Msg::decode(&bytes);
        let _ = Msg::decode_frame(&bytes::Bytes::from(bytes.clone()));
        let _ = Metadata::decode(&bytes);
        let _ = ActivityLog::decode_record(&bytes);
        // Valid header, random body for every type.
        for ty in 0u16..20 {
            let mut f = msg_header(ty, bytes.len() as u32);
            f.extend_from_slice(&bytes);
            let _ = Msg::decode(&f);
            let _ = Msg::decode_frame(&bytes::Bytes::from(f));
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(i in 0usize..17, pos in any::<usize>(), val in any::<u8>()) {
        let mut b = all_msgs()[i].encode();
        let p = pos % b.len();
        b[p] = val;
        let _ = Msg::decode(&b);
        let _ = Msg::decode_frame(&bytes::Bytes::from(b));
    }
}

fn msg_header(ty: u16, len: u32) -> Vec<u8> {
    let mut v = replica::msg::MSG_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&replica::msg::MSG_VERSION.to_be_bytes());
    v.extend_from_slice(&ty.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

use super::store::column_file;
use super::*;
use crate::engine::capture::CapturedStates;
use crate::util::{hex, sha256_bytes};
use candle_core::DType;
use std::path::Path;

const REQUEST: &str = "11aa22bb33cc44dd55ee66ff778899001122334455667788990011223344aabb";
const NONCE: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A store of 4 layers (5 columns) × 6 positions (prompt 2, 4 generated) × 3 wide, f32.
fn sample_store(shift: f32) -> CapturedStates {
    let (columns, positions, hidden) = (5usize, 6usize, 3usize);
    let data = (0..columns)
        .map(|c| {
            (0..positions * hidden)
                .flat_map(|i| (c as f32 * 100.0 + i as f32 + shift).to_le_bytes())
                .collect()
        })
        .collect();
    CapturedStates::from_parts((0..columns).collect(), hidden, DType::F32, positions, data).unwrap()
}

fn opened(
    dir: &Path,
    store: &CapturedStates,
    request: &str,
    nonce: &str,
    layers: usize,
) -> Commitment {
    let (commitment, tree) = commit(store, request).unwrap();
    let ch = derive_challenge(
        &commitment.root,
        nonce,
        b"sixteen byte key",
        4,
        layers,
        4,
        None,
    )
    .unwrap();
    write_opening(dir, &commitment, store, &tree, &ch, 2).unwrap();
    commitment
}

fn refusal(dir: &Path, commitment: &Commitment) -> String {
    format!(
        "{:#}",
        read_opening(dir, commitment, REQUEST, NONCE, 2).expect_err("must be refused")
    )
}

#[test]
fn every_leaf_proves_against_the_root_for_every_count() {
    for count in 1..=33usize {
        let leaves: Vec<Hash> = (0..count).map(|i| leaf_hash(i, 0, 0, &[i as u8])).collect();
        let tree = MerkleTree::from_leaves(leaves.clone()).unwrap();
        for (i, leaf) in leaves.iter().enumerate() {
            let proof = tree.proof(i);
            assert_eq!(proof.len(), proof_len(i, count), "count {count} leaf {i}");
            assert_eq!(
                root_from_proof(*leaf, i, count, &proof).unwrap(),
                tree.root()
            );
            // The same proof at a neighbouring index leads elsewhere.
            if count > 1 {
                let other = (i + 1) % count;
                let reached = root_from_proof(*leaf, other, count, &tree.proof(other));
                assert!(reached.map_or(true, |r| r != tree.root()));
            }
        }
    }
}

#[test]
fn the_documented_vector_holds() {
    // docs/commitment.md: 3 leaves, the third carried up unchanged.
    let leaves: Vec<Hash> = (0..3u8)
        .map(|p| leaf_hash(0, p as usize, 0, &(p as f32).to_le_bytes()))
        .collect();
    let tree = MerkleTree::from_leaves(leaves.clone()).unwrap();
    assert_eq!(
        tree.root(),
        node_hash(&node_hash(&leaves[0], &leaves[1]), &leaves[2])
    );
    let shape = StoreShape {
        columns: 1,
        positions: 3,
        hidden: 1,
    };
    let root = commitment_root(&parse_hash("r", REQUEST).unwrap(), 0, &shape, &tree.root());
    assert_eq!(
        hex(&leaves[0]),
        "e7ecebbc590bc88b3761fa6cd03d749f87463dabb67021a5c6768c25ec68b3f2"
    );
    assert_eq!(
        hex(&root),
        "cd915bd9ac4ebc026fbb5f935db8bfe1a4b5ebe343b1a2a58667d8867194f38e"
    );
    let ch = derive_challenge(&hex(&root), NONCE, b"sixteen byte key", 30, 3, 64, Some(4)).unwrap();
    assert_eq!(ch.layers, vec![15, 25, 27]);
    assert_eq!(ch.token_positions, Some(vec![8, 16, 20, 32]));
}

#[test]
fn challenges_are_deterministic_distinct_and_checked() {
    let root = hex(&[7u8; 32]);
    let a = derive_challenge(&root, NONCE, b"sixteen byte key", 30, 4, 64, Some(8)).unwrap();
    let b = derive_challenge(&root, NONCE, b"sixteen byte key", 30, 4, 64, Some(8)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.layers.len(), 4);
    assert!(a.layers.windows(2).all(|w| w[0] < w[1]) && a.layers.iter().all(|&l| l < 30));
    let other = derive_challenge(&root, NONCE, b"another secret!!", 30, 4, 64, Some(8)).unwrap();
    assert_ne!(a.layers, other.layers);
    check_challenge(&a).unwrap();
    let mut forged = a.clone();
    forged.layers = vec![0, 1, 2, 3];
    let err = format!("{:#}", check_challenge(&forged).unwrap_err());
    assert!(err.contains("not the one its secret draws"), "{err}");
    assert!(derive_challenge(&root, NONCE, b"short", 30, 4, 64, None).is_err());
    // Every layer at c = L.
    let all = derive_challenge(&root, NONCE, b"sixteen byte key", 30, 30, 64, None).unwrap();
    assert_eq!(all.layers, (0..30).collect::<Vec<_>>());
}

#[test]
fn an_honest_opening_is_accepted_with_every_row_proven() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(0.0);
    let commitment = opened(dir.path(), &store, REQUEST, NONCE, 2);
    let v = read_opening(dir.path(), &commitment, REQUEST, NONCE, 2).unwrap();
    let expected_rows: usize = rows_to_open(&v.challenge, 2, 4)
        .iter()
        .map(|(_, p)| p.len())
        .sum();
    assert_eq!(v.proofs_checked, expected_rows);
    let rows = v.rows_f32(0, &[1]).unwrap();
    assert_eq!(rows[0], vec![3.0, 4.0, 5.0]);
}

#[test]
fn a_flipped_byte_in_any_opened_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(0.0);
    let commitment = opened(dir.path(), &store, REQUEST, NONCE, 2);
    let file: OpeningFile =
        serde_json::from_slice(&std::fs::read(dir.path().join(OPENING_FILE)).unwrap()).unwrap();
    for entry in &file.columns {
        let path = dir.path().join(&entry.data);
        let honest = std::fs::read(&path).unwrap();
        for at in [0, honest.len() / 2, honest.len() - 1] {
            let mut bytes = honest.clone();
            bytes[at] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            // With the checksum fixed too: the proof is what refuses it.
            let mut fixed = file.clone();
            for e in &mut fixed.columns {
                if e.column == entry.column {
                    e.data_sha256 = sha256_bytes(&bytes);
                }
            }
            std::fs::write(
                dir.path().join(OPENING_FILE),
                serde_json::to_vec(&fixed).unwrap(),
            )
            .unwrap();
            let err = refusal(dir.path(), &commitment);
            assert!(
                err.contains(&format!("column {}", entry.column))
                    && err.contains("does not lead to the committed root"),
                "{err}"
            );
        }
        std::fs::write(&path, &honest).unwrap();
        std::fs::write(
            dir.path().join(OPENING_FILE),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
    }
    read_opening(dir.path(), &commitment, REQUEST, NONCE, 2).unwrap();
}

#[test]
fn a_row_and_proof_of_another_position_or_column_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(0.0);
    let commitment = opened(dir.path(), &store, REQUEST, NONCE, 1);
    let file: OpeningFile =
        serde_json::from_slice(&std::fs::read(dir.path().join(OPENING_FILE)).unwrap()).unwrap();
    let (_, tree) = commit(&store, REQUEST).unwrap();
    let shape = commitment.shape;
    let row_bytes = 12;
    // Column 0's row 0 replaced by its row 1 with row 1's own (valid) proof.
    let entry = &file.columns[0];
    let data_path = dir.path().join(&entry.data);
    let mut data = std::fs::read(&data_path).unwrap();
    let row1 = data[row_bytes..2 * row_bytes].to_vec();
    data[..row_bytes].copy_from_slice(&row1);
    std::fs::write(&data_path, &data).unwrap();
    let mut proofs = Vec::new();
    for (k, &p) in entry.positions.iter().enumerate() {
        let from = if k == 0 { 1 } else { p };
        for s in tree.proof(shape.leaf_index(0, from)) {
            proofs.extend_from_slice(&s);
        }
    }
    let proof_path = dir.path().join(&entry.proofs);
    let honest_proofs = std::fs::read(&proof_path).unwrap();
    if proofs.len() == honest_proofs.len() {
        std::fs::write(&proof_path, &proofs).unwrap();
    }
    let mut fixed = file.clone();
    fixed.columns[0].data_sha256 = sha256_bytes(&data);
    std::fs::write(
        dir.path().join(OPENING_FILE),
        serde_json::to_vec(&fixed).unwrap(),
    )
    .unwrap();
    let err = refusal(dir.path(), &commitment);
    assert!(
        err.contains("column 0 position 0") && err.contains("committed root"),
        "{err}"
    );

    // A row of column 1 presented as column 0's (the leaf names its column).
    let dir2 = tempfile::tempdir().unwrap();
    let commitment = opened(dir2.path(), &store, REQUEST, NONCE, 1);
    let path0 = dir2.path().join(column_file(0));
    let mut data = std::fs::read(&path0).unwrap();
    data[..row_bytes].copy_from_slice(&store.data[1][..row_bytes]);
    std::fs::write(&path0, &data).unwrap();
    let mut f2: OpeningFile =
        serde_json::from_slice(&std::fs::read(dir2.path().join(OPENING_FILE)).unwrap()).unwrap();
    f2.columns[0].data_sha256 = sha256_bytes(&data);
    std::fs::write(
        dir2.path().join(OPENING_FILE),
        serde_json::to_vec(&f2).unwrap(),
    )
    .unwrap();
    let err = refusal(dir2.path(), &commitment);
    assert!(err.contains("column 0 position 0"), "{err}");
}

#[test]
fn an_opening_for_another_request_or_an_earlier_run_is_refused() {
    let store = sample_store(0.0);
    // The same states committed for another request: another root.
    let other_request = "ff".repeat(32);
    let dir = tempfile::tempdir().unwrap();
    opened(dir.path(), &store, &other_request, NONCE, 2);
    let (ours, _) = commit(&store, REQUEST).unwrap();
    let err = refusal(dir.path(), &ours);
    assert!(err.contains("another run or request"), "{err}");

    // An earlier run of the same request (other states): its opening does not fit this root.
    let earlier = tempfile::tempdir().unwrap();
    opened(earlier.path(), &sample_store(0.5), REQUEST, NONCE, 2);
    let err = refusal(earlier.path(), &ours);
    assert!(err.contains("another run or request"), "{err}");

    // The earlier opening relabelled with this run's commitment: the challenge gives it away,
    // and with the challenge redrawn the proofs do.
    let mut file: OpeningFile =
        serde_json::from_slice(&std::fs::read(earlier.path().join(OPENING_FILE)).unwrap()).unwrap();
    file.commitment = ours.clone();
    std::fs::write(
        earlier.path().join(OPENING_FILE),
        serde_json::to_vec(&file).unwrap(),
    )
    .unwrap();
    let err = refusal(earlier.path(), &ours);
    assert!(err.contains("a reused opening"), "{err}");
    let ch = derive_challenge(&ours.root, NONCE, b"sixteen byte key", 4, 2, 4, None).unwrap();
    file.challenge = ch;
    std::fs::write(
        earlier.path().join(OPENING_FILE),
        serde_json::to_vec(&file).unwrap(),
    )
    .unwrap();
    let err = refusal(earlier.path(), &ours);
    assert!(err.contains("does not lead to the committed root"), "{err}");

    // A commitment bound to another request than the one verified.
    let err = format!(
        "{:#}",
        read_opening(
            dir.path(),
            &commit(&store, &other_request).unwrap().0,
            REQUEST,
            NONCE,
            2
        )
        .unwrap_err()
    );
    assert!(err.contains("not to the request being verified"), "{err}");
}

#[test]
fn untrusted_openings_are_bounded_and_names_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(0.0);
    let commitment = opened(dir.path(), &store, REQUEST, NONCE, 2);
    let mut file: OpeningFile =
        serde_json::from_slice(&std::fs::read(dir.path().join(OPENING_FILE)).unwrap()).unwrap();
    file.columns[0].data = "../../etc/passwd".into();
    std::fs::write(
        dir.path().join(OPENING_FILE),
        serde_json::to_vec(&file).unwrap(),
    )
    .unwrap();
    let err = refusal(dir.path(), &commitment);
    assert!(err.contains("not the fixed names"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let commitment = opened(dir.path(), &store, REQUEST, NONCE, 2);
    // A data file longer than its positions: refused by size before it is hashed.
    let path = dir.path().join(column_file(0));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(&path, &bytes).unwrap();
    let err = refusal(dir.path(), &commitment);
    assert!(
        err.contains("column_0000.bin") && err.contains("limit"),
        "{err}"
    );
}

#[test]
fn a_store_written_and_read_back_hashes_to_its_commitment() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(0.0);
    let (commitment, _) = commit(&store, REQUEST).unwrap();
    write_store(dir.path(), &store).unwrap();
    let (back, tree) = read_store(dir.path(), &commitment).unwrap();
    assert_eq!(back, store);
    assert_eq!(
        hex(&commitment_root(
            &parse_hash("r", REQUEST).unwrap(),
            0,
            &commitment.shape,
            &tree.root()
        )),
        commitment.root
    );
    // A store edited after the commitment is noticed before anything is opened from it.
    let path = dir.path().join(STORE_DIR).join(column_file(3));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = format!("{:#}", read_store(dir.path(), &commitment).unwrap_err());
    assert!(err.contains("hashes to root"), "{err}");
}

#[test]
fn an_opening_larger_than_a_verifier_reads_is_refused_before_any_row() {
    // 100k positions × 128k wide: column 0 alone would be 51 GB of f32.
    let shape = StoreShape {
        columns: 31,
        positions: 100_000,
        hidden: 1 << 17,
    };
    let request = parse_hash("request", REQUEST).unwrap();
    let root = hex(&commitment_root(&request, 0, &shape, &[7u8; 32]));
    let commitment = Commitment {
        root: root.clone(),
        request_sha256: REQUEST.into(),
        dtype: "f32".into(),
        shape,
    };
    let prompt_len = 99_000;
    let ch = derive_challenge(&root, NONCE, b"sixteen byte key", 30, 1, 1000, Some(1)).unwrap();
    let columns = rows_to_open(&ch, prompt_len, 1000)
        .into_iter()
        .map(|(column, positions)| OpenedColumnFile {
            column,
            positions,
            data: format!("column_{column:04}.bin"),
            data_sha256: "0".repeat(64),
            proofs: format!("column_{column:04}.proofs"),
        })
        .collect();
    let file = OpeningFile {
        format_version: OPENING_FORMAT_VERSION,
        commitment: commitment.clone(),
        challenge: ch,
        columns,
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(OPENING_FILE),
        serde_json::to_vec(&file).unwrap(),
    )
    .unwrap();
    // No row file exists: the refusal comes from the size alone.
    let err = format!(
        "{:#}",
        read_opening(dir.path(), &commitment, REQUEST, NONCE, prompt_len).unwrap_err()
    );
    assert!(
        err.contains("more than the 4294967296 bytes a verifier reads"),
        "{err}"
    );
}

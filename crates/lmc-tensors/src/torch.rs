//! PyTorch checkpoints written by `torch.save`.
//!
//! Since PyTorch 1.6 a checkpoint is a zip archive (the stored, never
//! compressed, members of a folder named after the file):
//!
//! ```text
//! archive/data.pkl          the pickled object: dicts, lists, tensors
//! archive/data/0 ...        one member per storage, its raw little-endian bytes
//! archive/byteorder, archive/version, archive/.data/serialization_id, ...
//! ```
//!
//! A tensor in the pickle is a call `_rebuild_tensor_v2(storage, offset,
//! size, stride, ...)` whose storage is a persistent id
//! `('storage', torch.FloatStorage, '0', 'cpu', numel)`: the storage's type,
//! its key (the member `data/0`) and its element count. Each storage
//! becomes one tensor segment of shape `[numel]` and the storage's dtype,
//! named after the first tensor that uses it (`model.fc.weight`,
//! `optimizer.state.0.exp_avg`); views that share a storage share its
//! segment. Everything else (zip headers, the pickle, small members, the
//! central directory, alignment padding) becomes byte segments.
//!
//! The legacy format (before 1.6, or `_use_new_zipfile_serialization=False`)
//! is a sequence of pickles (a magic number, the protocol version, system
//! info, the object, the list of storage keys) followed by each storage in
//! key order as a little-endian `i64` element count and the storage's bytes.
//!
//! The pickle is read by [`crate::pickle`], which never imports or calls
//! anything. Callables the pickle would call on `torch.load` that are not
//! among the ones PyTorch's own `weights_only` loader allows are reported
//! (a checkpoint can hold code; lmc stores it as bytes like the rest).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use lmc_core::{Dtype, SegmentKind};

use crate::pickle::{self, Obj, Pickle, Value};
use crate::zip::Entry;
use crate::{Error, Region};
use lmc_core::error::quote_name;

/// The dtype of a torch storage type name (`FloatStorage`), and how many of
/// it make one element (complex numbers are pairs). `None`: stored as bytes.
pub fn storage_dtype(name: &str) -> Option<(Dtype, u64)> {
    Some(match name {
        "DoubleStorage" => (Dtype::F64, 1),
        "FloatStorage" => (Dtype::F32, 1),
        "HalfStorage" => (Dtype::F16, 1),
        "BFloat16Storage" => (Dtype::BF16, 1),
        "LongStorage" => (Dtype::I64, 1),
        "IntStorage" => (Dtype::I32, 1),
        "ShortStorage" => (Dtype::I16, 1),
        "CharStorage" => (Dtype::I8, 1),
        "ByteStorage" => (Dtype::U8, 1),
        "BoolStorage" => (Dtype::Bool, 1),
        "ComplexFloatStorage" => (Dtype::F32, 2),
        "ComplexDoubleStorage" => (Dtype::F64, 2),
        _ => return None,
    })
}

/// The dtype of a `torch.<name>` dtype object (as `_rebuild_tensor_v3`
/// gives for dtypes without a legacy storage type).
fn torch_dtype(name: &str) -> Option<Dtype> {
    Some(match name {
        "uint16" => Dtype::U16,
        "uint32" => Dtype::U32,
        "uint64" => Dtype::U64,
        "float8_e4m3fn" => Dtype::F8E4M3,
        "float8_e5m2" => Dtype::F8E5M2,
        _ => return None,
    })
}

/// Callables that `torch.load(weights_only=True)` lets a pickle call and
/// that state dicts use (torch's `_get_allowed_globals`).
const KNOWN_CALLS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.serialization", "_get_layout"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "Tensor"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("__builtin__", "set"),
    ("_codecs", "encode"),
];

/// `torch.<name>` values a pickle may name without calling them: dtypes
/// and quantization schemes (`torch.float32`, `torch.per_tensor_affine`).
/// Storage and tensor classes (`torch.FloatStorage`, `torch.FloatTensor`)
/// are allowed by their suffix.
const TORCH_VALUES: &[&str] = &[
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "complex32",
    "chalf",
    "complex64",
    "cfloat",
    "complex128",
    "cdouble",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "bool",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
];

/// Whether `torch.load(weights_only=True)` lets a pickle name `module.name`
/// (it refuses a pickle at the first name outside its list, called or not:
/// a name passed as an argument can still be called by what receives it).
fn allowed_name(module: &str, name: &str) -> bool {
    let class = |suffix: &str| {
        name.len() > suffix.len()
            && name.ends_with(suffix)
            && name.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    KNOWN_CALLS.contains(&(module, name))
        || match module {
            "torch" => TORCH_VALUES.contains(&name) || class("Storage") || class("Tensor"),
            "torch.cuda" => class("Tensor"),
            "torch.storage" => matches!(name, "UntypedStorage" | "TypedStorage"),
            _ => false,
        }
}

/// What `torch.load(weights_only=True)` would refuse in a pickle, and
/// anything this reader cannot follow, each as a phrase naming the pickle
/// (`what`) and the offset. Empty: loading it calls only what state dicts
/// use. This is lmc's one pickle rule; the front ends apply it through
/// `lmc_files`.
pub fn pickle_refusals(p: &Pickle, what: &str) -> Vec<String> {
    // A hostile pickle's global names can be any length.
    let dotted = |m: &str, n: &str| crate::bounded_concat(&[m, ".", n]);
    let mut out = Vec::new();
    // Each name is checked and reported once, at its first offset: the
    // reader keeps each string once, so a name is its strings' addresses,
    // and a pickle naming one long string many times (`STACK_GLOBAL` of
    // memoized strings) costs a hash lookup per reference, not a scan.
    let id = |m: &str, n: &str| (m.as_ptr() as usize, n.as_ptr() as usize);
    let mut checked: HashMap<(usize, usize), bool> = HashMap::new();
    let mut allowed = |m: &str, n: &str| {
        *checked
            .entry(id(m, n))
            .or_insert_with(|| allowed_name(m, n))
    };
    let mut reported = HashSet::new();
    for (m, n, at) in p.globals() {
        if !allowed(m, n) && reported.insert(id(m, n)) {
            out.push(format!("{what} names {} (offset {at})", dotted(m, n)));
        }
    }
    let mut reported = HashSet::new();
    for &f in &p.calls {
        match p.global(f) {
            Some((m, n)) if KNOWN_CALLS.contains(&(m, n)) => {}
            Some((m, n)) if allowed(m, n) => {
                if reported.insert(Some(id(m, n))) {
                    out.push(format!("{what} calls {}", dotted(m, n)))
                }
            }
            Some(_) => {} // reported as a name above
            None => {
                if reported.insert(None) {
                    out.push(format!("{what} calls a callable built inside the pickle"))
                }
            }
        }
    }
    if let Some(why) = &p.stopped {
        out.push(format!(
            "{what} cannot be followed to its end ({why}), so what it would do when loaded cannot be checked"
        ));
    }
    out.dedup();
    out
}

/// One storage a pickle refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub key: String,
    /// The storage type's name (`FloatStorage`, `UntypedStorage`).
    pub type_name: String,
    /// Elements (bytes for an untyped storage).
    pub numel: u64,
    /// The dtype lmc groups it as, if any, and how many of it one element is.
    pub dtype: Option<(Dtype, u64)>,
    /// The first path that uses it, or `data/KEY` if none was found.
    pub name: String,
}

/// What lmc found in a checkpoint's pickle.
#[derive(Debug, Clone, Default)]
pub struct PickleSummary {
    /// Storages by key, in the order the pickle first named them.
    pub storages: Vec<Storage>,
    /// What [`pickle_refusals`] found.
    pub refusals: Vec<String>,
    /// Why reading stopped early, if it did.
    pub stopped: Option<String>,
    /// Offset after the pickle's STOP.
    pub end: Option<usize>,
}

/// Reads the pickle at `start` and collects its storages; `what` names the
/// pickle in refusals.
pub fn summarize(bytes: &[u8], start: usize, what: &str) -> PickleSummary {
    let p = pickle::read(bytes, start);
    // Storages by the pickle's id of their key string (the reader keeps
    // each string once, so equal ids are equal keys): a pickle can name
    // one long key many times for a few bytes each, and neither hashing
    // nor copying it may happen per reference.
    let mut by_key: HashMap<u32, usize> = HashMap::new();
    let mut storages: Vec<Storage> = Vec::new();
    for &pid in &p.persistent_ids {
        if storage_key_id(&p, pid).is_none_or(|k| by_key.contains_key(&k)) {
            continue;
        }
        let (Some(k), Some(s)) = (storage_key_id(&p, pid), storage_of(&p, pid)) else {
            continue;
        };
        by_key.insert(k, storages.len());
        storages.push(s);
    }
    // Names and dtype hints from the structure.
    let mut named: Vec<Option<String>> = vec![None; storages.len()];
    p.walk(|path, v| {
        let Some(obj) = p.obj(v) else { return };
        match obj {
            Obj::Persistent(pid) => {
                if let Some(key) = storage_key_id(&p, *pid)
                    && let Some(&i) = by_key.get(&key)
                    && named[i].is_none()
                {
                    named[i] = Some(if path.is_empty() {
                        "(root)".to_string()
                    } else {
                        path.to_string()
                    });
                }
            }
            Obj::Call { func, args, .. }
                if p.global(*func) == Some(("torch._utils", "_rebuild_tensor_v3")) =>
            {
                // Untyped storages take the dtype of the tensor that uses them.
                let Some(a) = p.tuple(*args) else { return };
                let key = a.first().and_then(|s| match p.obj(*s) {
                    Some(Obj::Persistent(pid)) => storage_key_id(&p, *pid),
                    _ => None,
                });
                let dtype = a.get(6).and_then(|d| match p.global(*d) {
                    Some(("torch", n)) => torch_dtype(n),
                    _ => None,
                });
                if let (Some(k), Some(d)) = (key, dtype)
                    && let Some(&i) = by_key.get(&k)
                {
                    let s = &mut storages[i];
                    if s.dtype.is_none() && s.type_name == "UntypedStorage" {
                        let w = d.width() as u64;
                        if s.numel.is_multiple_of(w) {
                            s.dtype = Some((d, 1));
                            s.numel /= w;
                        }
                    }
                }
            }
            _ => {}
        }
    });
    let mut used = BTreeSet::new();
    for (s, n) in storages.iter_mut().zip(named) {
        let mut name = n.unwrap_or_else(|| format!("data/{}", s.key));
        if !used.insert(name.clone()) {
            name = format!("{name}#{}", s.key);
            used.insert(name.clone());
        }
        s.name = name;
    }
    let refusals = pickle_refusals(&p, what);
    PickleSummary {
        storages,
        refusals,
        stopped: p.stopped.clone(),
        end: p.end,
    }
}

/// The key of a `('storage', type, key, location, numel)` persistent id.
fn storage_key(p: &Pickle, pid: Value) -> Option<&str> {
    let t = p.tuple(pid)?;
    (p.string(*t.first()?)? == "storage").then_some(())?;
    p.string(*t.get(2)?)
}

/// The [`storage_key`] as the pickle's string id.
fn storage_key_id(p: &Pickle, pid: Value) -> Option<u32> {
    storage_key(p, pid)?;
    match p.tuple(pid)?.get(2)? {
        Value::Str(i) => Some(*i),
        _ => None,
    }
}

fn storage_of(p: &Pickle, pid: Value) -> Option<Storage> {
    let t = p.tuple(pid)?;
    let key = storage_key(p, pid)?;
    let (_, type_name) = p.global(*t.get(1)?)?;
    let Value::Int(numel) = *t.get(4)? else {
        return None;
    };
    let numel = u64::try_from(numel).ok()?;
    // Copied only once the rest is read.
    let (key, type_name) = (key.to_string(), type_name.to_string());
    Some(Storage {
        dtype: storage_dtype(&type_name),
        key,
        type_name,
        numel,
        name: String::new(),
    })
}

/// What [`pickle_refusals`] finds in every pickle of a zip archive (any
/// member named `*.pkl`, in any letter case, as torch's zip reader matches
/// names): not only the one lmc reads storages from, since which one
/// torch.load reads is torch's choice. A compressed pickle cannot be checked.
/// `skip` names a member the caller checks itself.
pub fn zip_pickle_refusals(bytes: &[u8], entries: &[Entry], skip: Option<&str>) -> Vec<String> {
    let mut refusals = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.name.to_ascii_lowercase().ends_with(".pkl") && Some(e.name.as_str()) != skip)
    {
        if e.is_stored() {
            let p = pickle::read(e.data(bytes), 0);
            refusals.extend(pickle_refusals(&p, &e.name));
        } else {
            refusals.push(format!(
                "{} is compressed inside the archive (torch.save never does that), so what its \
                 pickle would do when loaded cannot be checked",
                e.name
            ));
        }
    }
    refusals.dedup();
    refusals
}

/// What `torch.load` would run in a file that is neither a zip archive nor
/// a legacy torch file: torch unpickles such a file from its first byte (or,
/// if it is a tar archive, the pickles in it). Refused: a complete pickle
/// that [`pickle_refusals`] refuses, any name a pickle would import that is
/// not allowed (even if lmc's reader stops later), and a tar archive with the
/// members torch's legacy loader reads. Other files (text, JSON, images)
/// give nothing.
pub fn raw_pickle_refusals(bytes: &[u8]) -> Vec<String> {
    if let Some(member) = torch_tar_member(bytes) {
        return vec![format!(
            "it is a tar archive with a member {member:?}, from which torch.load's legacy \
             loader unpickles; lmc cannot check it"
        )];
    }
    let p = pickle::read(bytes, 0);
    let mut out = pickle_refusals(&p, "its pickle");
    if p.end.is_none() {
        // Not a pickle lmc can follow: only names Python could import count.
        let importable = |m: &str, n: &str| {
            let ident = |s: &str| {
                !s.is_empty()
                    && s.split('.').all(|part| {
                        part.chars()
                            .next()
                            .is_some_and(|c| c.is_alphabetic() || c == '_')
                            && part.chars().all(|c| c.is_alphanumeric() || c == '_')
                    })
            };
            ident(m) && ident(n)
        };
        out = p
            .globals()
            .filter(|&(m, n, _)| importable(m, n) && !allowed_name(m, n))
            .map(|(m, n, at)| format!("its pickle names {m}.{n} (offset {at})"))
            .collect();
    }
    out
}

/// The first member of a tar archive that torch's legacy loader reads
/// (`sys_info`, `pickle`, `storages`, `tensors`), if `bytes` is a tar
/// archive (ustar or v7 headers with valid checksums) with one.
fn torch_tar_member(bytes: &[u8]) -> Option<&'static str> {
    const NAMES: [&str; 4] = ["sys_info", "pickle", "storages", "tensors"];
    let mut at = 0usize;
    // Bounded by the file: each header moves at least one block on.
    while let Some(h) = bytes.get(at..at.checked_add(512)?) {
        if h.iter().all(|&b| b == 0) {
            return None;
        }
        let stored = std::str::from_utf8(&h[148..156])
            .ok()
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
            .and_then(|s| u32::from_str_radix(s, 8).ok())?;
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u32
                }
            })
            .sum();
        if sum != stored {
            return None;
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&h[..name_end]).unwrap_or("");
        let name = name.trim_start_matches("./");
        if let Some(n) = NAMES.iter().find(|n| **n == name) {
            return Some(n);
        }
        let size = std::str::from_utf8(&h[124..136])
            .ok()
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
            .and_then(|s| u64::from_str_radix(s, 8).ok())?;
        let blocks = usize::try_from(size.div_ceil(512)).ok()?;
        at = at.checked_add(512)?.checked_add(blocks.checked_mul(512)?)?;
    }
    None
}

/// Whether a zip archive's members look like a torch checkpoint: a
/// `FOLDER/data.pkl` member. Returns the folder.
pub fn torch_folder(entries: &[Entry]) -> Option<&str> {
    entries
        .iter()
        .filter_map(|e| e.name.strip_suffix("/data.pkl"))
        .find(|f| !f.contains('/'))
}

/// The regions of a torch zip checkpoint's storages.
pub fn zip_regions(
    bytes: &[u8],
    entries: &[Entry],
    folder: &str,
) -> Result<(Vec<Region>, PickleSummary, Vec<String>), Error> {
    let mut notes = Vec::new();
    let by_name: BTreeMap<&str, &Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let pkl = by_name[format!("{folder}/data.pkl").as_str()];
    // A stored data.pkl is read (and checked) once, by `summarize` below.
    let skip = pkl.is_stored().then_some(pkl.name.as_str());
    let refusals = zip_pickle_refusals(bytes, entries, skip);
    if !pkl.is_stored() {
        notes.push(format!(
            "{} is compressed in the archive; its storages are stored as bytes",
            pkl.name
        ));
        let summary = PickleSummary {
            refusals,
            ..PickleSummary::default()
        };
        return Ok((Vec::new(), summary, notes));
    }
    let big_endian = by_name
        .get(format!("{folder}/byteorder").as_str())
        .is_some_and(|e| e.is_stored() && e.data(bytes) == b"big");
    let mut summary = summarize(pkl.data(bytes), 0, &pkl.name);
    summary.refusals.extend(refusals);
    if let Some(why) = &summary.stopped {
        notes.push(format!(
            "{}: {why}; storages named after that point are stored as bytes",
            pkl.name
        ));
    }
    let mut regions = Vec::new();
    for s in &summary.storages {
        let Some(e) = by_name.get(format!("{folder}/data/{}", s.key).as_str()) else {
            continue;
        };
        let Some((dtype, per)) = s.dtype.filter(|_| !big_endian && e.is_stored()) else {
            continue;
        };
        let expect = s
            .numel
            .checked_mul(per)
            .and_then(|n| n.checked_mul(dtype.width() as u64));
        if expect != Some(e.len) {
            notes.push(format!(
                "storage {} ({}, {} elements) has {} bytes in the archive; stored as bytes",
                s.key, s.type_name, s.numel, e.len
            ));
            continue;
        }
        regions.push(Region {
            offset: e.data_offset,
            kind: SegmentKind::Tensor {
                name: s.name.clone(),
                dtype,
                shape: if per > 1 {
                    vec![s.numel, per]
                } else {
                    vec![s.numel]
                },
            },
            len: e.len,
        });
    }
    Ok((regions, summary, notes))
}

/// The first bytes of a legacy (non-zip) torch file: pickle protocol 2 and
/// the magic number 0x1950a86a20f9469cfc6c as a LONG1.
pub const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

pub fn looks_like_legacy(bytes: &[u8]) -> bool {
    bytes.starts_with(LEGACY_MAGIC)
}

/// The regions of a legacy torch file's storages.
pub fn legacy_regions(bytes: &[u8]) -> Result<(Vec<Region>, PickleSummary, Vec<String>), Error> {
    // torch's legacy loader tries the file as a tar archive first.
    if let Some(member) = torch_tar_member(bytes) {
        return Err(Error::Torch(format!(
            "it is also a tar archive with a member {member:?}, which torch.load would read \
             instead of the pickles lmc checks"
        )));
    }
    let mut notes = Vec::new();
    let mut at = 0;
    // Magic number, protocol version, system info: torch.load unpickles
    // each, so each is checked like the object itself.
    let mut little_endian = true;
    let mut refusals = Vec::new();
    for what in ["magic number", "protocol version", "system info"] {
        let p = pickle::read(bytes, at);
        refusals.extend(pickle_refusals(
            &p,
            &format!("the {what} pickle at offset {at}"),
        ));
        if what == "system info" {
            little_endian = sys_info_little_endian(&p);
        }
        at = p.end.ok_or_else(|| {
            Error::Torch(format!(
                "legacy file: the {what} pickle cannot be read: {}",
                p.stopped.unwrap_or_default()
            ))
        })?;
    }
    let mut summary = summarize(bytes, at, &format!("the object pickle at offset {at}"));
    refusals.append(&mut summary.refusals);
    summary.refusals = refusals;
    let Some(end) = summary.end else {
        notes.push(format!(
            "legacy file: the object pickle at offset {at}: {}; its storages are stored as bytes",
            summary.stopped.clone().unwrap_or_default()
        ));
        return Ok((Vec::new(), summary, notes));
    };
    // The storage keys, in the order their data follows.
    let keys = pickle::read(bytes, end);
    summary.refusals.extend(pickle_refusals(
        &keys,
        &format!("the storage-key pickle at offset {end}"),
    ));
    let (Some(root), Some(mut at)) = (keys.root, keys.end) else {
        return Err(Error::Torch(format!(
            "legacy file: the list of storage keys at offset {end} cannot be read: {}",
            keys.stopped.unwrap_or_default()
        )));
    };
    let Some(Obj::List(list)) = keys.obj(root) else {
        return Err(Error::Torch(format!(
            "legacy file: no list of storage keys at offset {end}"
        )));
    };
    let by_key: HashMap<&str, &Storage> = summary
        .storages
        .iter()
        .map(|s| (s.key.as_str(), s))
        .collect();
    let mut regions = Vec::new();
    // Looked up once per distinct key string: the list can name one long
    // key many times.
    let mut found: HashMap<Option<u32>, Option<&Storage>> = HashMap::new();
    for k in list {
        let key = keys.string(*k).unwrap_or("?");
        let id = match k {
            Value::Str(i) => Some(*i),
            _ => None,
        };
        let s = *found.entry(id).or_insert_with(|| by_key.get(key).copied());
        let s = s.ok_or_else(|| {
            Error::Torch(format!(
                "legacy file: storage {} is listed but no tensor uses it",
                quote_name(key)
            ))
        })?;
        let key = quote_name(key);
        // Element size: from the storage type; unknown types make the rest bytes.
        let Some((dtype, per)) = s.dtype.filter(|_| little_endian) else {
            notes.push(format!(
                "legacy file: storage {key} has type {}; it and the storages after it are stored as bytes",
                quote_name(&s.type_name)
            ));
            break;
        };
        let count = bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| {
                Error::Torch(format!(
                    "legacy file: truncated at offset {at}, before storage {key}"
                ))
            })?;
        if count != s.numel {
            return Err(Error::Torch(format!(
                "legacy file: storage {key} has {count} elements at offset {at}, the pickle says {}",
                s.numel
            )));
        }
        let len = count
            .checked_mul(per * dtype.width() as u64)
            .filter(|&l| l <= (bytes.len() - at - 8) as u64)
            .ok_or_else(|| {
                Error::Torch(format!(
                    "legacy file: storage {key} ({count} elements of {}) runs past the end of the {}-byte file (truncated?)",
                    quote_name(&s.type_name),
                    bytes.len()
                ))
            })?;
        regions.push(Region {
            offset: at as u64 + 8,
            kind: SegmentKind::Tensor {
                name: s.name.clone(),
                dtype,
                shape: if per > 1 {
                    vec![count, per]
                } else {
                    vec![count]
                },
            },
            len,
        });
        at += 8 + len as usize;
    }
    Ok((regions, summary, notes))
}

/// Whether the system-info pickle says little-endian (it does unless it
/// says otherwise).
fn sys_info_little_endian(p: &Pickle) -> bool {
    let Some(Obj::Dict(items)) = p.root.and_then(|r| p.obj(r)) else {
        return true;
    };
    !items
        .iter()
        .any(|(k, v)| p.string(*k) == Some("little_endian") && *v == Value::Bool(false))
}

/// Notes about a checkpoint's pickle for the user, when it is stored
/// although [`pickle_refusals`] found something.
pub fn notes(summary: &PickleSummary) -> Vec<String> {
    if summary.refusals.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "torch.load(weights_only=True) would refuse it: {} (lmc never runs a pickle and \
         restores it byte for byte)",
        summary.refusals.join("; ")
    )]
}

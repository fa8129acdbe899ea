//! A small reader of Python pickles that never executes anything.
//!
//! PyTorch's `torch.save` writes the structure of a checkpoint (dicts,
//! lists, tensors) as a pickle (the Python `pickle` module's format,
//! protocols 0 to 5; PEP 307 and PEP 3154 describe protocols 2 and 4) and
//! the tensors' storages next to it. lmc needs only the storages each
//! tensor refers to and a name for each, so this reader runs the pickle
//! machine's stack operations on inert values:
//!
//! - `GLOBAL` and `STACK_GLOBAL` push a *name* (module and attribute); no
//!   module is imported.
//! - `REDUCE`, `NEWOBJ`, `INST` and `OBJ` record a *call* (the callable and
//!   its arguments) without calling anything; `BUILD` records the state.
//! - `PERSID` and `BINPERSID` record the persistent id, which in a torch
//!   file names a storage: `('storage', torch.FloatStorage, '0', 'cpu', 12)`.
//!
//! An opcode it does not know, a malformed argument or a stack that does
//! not hold what an opcode needs stops the reading where it is; what was
//! read before stays usable and [`Pickle::stopped`] says why it stopped.
//! Nothing in a pickle can make this reader allocate more than a small
//! multiple of the pickle's own size: strings are stored once and shared
//! by reference, and containers live in one arena.

use std::collections::HashMap;

/// A value on the pickle machine's stack. Containers and calls are indices
/// into the [`Pickle`]'s arena, so copying a value (`DUP`, `GET`) is cheap
/// whatever it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in 64 bits.
    BigInt,
    Float(f64),
    /// A string (index into [`Pickle::string`]).
    Str(u32),
    /// A bytes object of this length (its contents are not kept).
    Bytes(u64),
    /// A module attribute: `GLOBAL module name` (index into [`Pickle::global`]).
    Global(u32),
    /// A container, call or persistent id (index into [`Pickle::obj`]).
    Obj(u32),
}

/// What a [`Value::Obj`] refers to.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// What unpickling would get by calling `func(*args)` (never called
    /// here), with the state `BUILD` gave it and the items `SETITEM(S)` and
    /// `APPEND(S)` added to it (an `OrderedDict` is built this way).
    Call {
        func: Value,
        args: Value,
        state: Option<Value>,
        items: Vec<(Value, Value)>,
        elems: Vec<Value>,
    },
    /// A persistent id: a reference to something stored outside the pickle.
    Persistent(Value),
}

/// A read pickle: its values and where it ended.
#[derive(Debug, Clone, Default)]
pub struct Pickle {
    strings: Vec<String>,
    /// Every `GLOBAL`, `STACK_GLOBAL`, `INST` and `EXT` name, with the
    /// offset of its opcode; the module and name are indices into
    /// `strings` (a `STACK_GLOBAL` of memoized strings copies nothing).
    globals: Vec<(u32, u32, usize)>,
    objs: Vec<Obj>,
    /// The value `STOP` returned; `None` if reading stopped before.
    pub root: Option<Value>,
    /// Offset just after the `STOP` opcode.
    pub end: Option<usize>,
    /// Why reading stopped before `STOP` (an unknown opcode, a truncated
    /// argument, a stack that does not hold what an opcode needs).
    pub stopped: Option<String>,
    /// Every persistent id, in the order the pickle gave them.
    pub persistent_ids: Vec<Value>,
    /// The callables of every call, in the order they were made.
    pub calls: Vec<Value>,
}

/// How deep [`Pickle::walk`] goes into nested containers.
pub const MAX_DEPTH: usize = 256;

impl Pickle {
    pub fn string(&self, v: Value) -> Option<&str> {
        match v {
            Value::Str(i) => self.strings.get(i as usize).map(|s| s.as_str()),
            _ => None,
        }
    }

    /// `(module, name)` of a [`Value::Global`].
    pub fn global(&self, v: Value) -> Option<(&str, &str)> {
        match v {
            Value::Global(i) => self
                .globals
                .get(i as usize)
                .map(|&(m, n, _)| (self.str_at(m), self.str_at(n))),
            _ => None,
        }
    }

    /// Every name the pickle refers to (`GLOBAL os system` is
    /// `("os", "system", offset)`), in the order it gave them. Unpickling
    /// imports each, whether or not it is called.
    pub fn globals(&self) -> impl Iterator<Item = (&str, &str, usize)> {
        self.globals
            .iter()
            .map(|&(m, n, at)| (self.str_at(m), self.str_at(n), at))
    }

    fn str_at(&self, i: u32) -> &str {
        self.strings.get(i as usize).map_or("", |s| s.as_str())
    }

    pub fn obj(&self, v: Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objs.get(i as usize),
            _ => None,
        }
    }

    /// The items of a tuple value.
    pub fn tuple(&self, v: Value) -> Option<&[Value]> {
        match self.obj(v)? {
            Obj::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// Visits every value reachable from the root with its path: dict keys
    /// and list or tuple indices joined with `.` (`model.fc.weight`,
    /// `state.0.exp_avg`). The arguments and state of a call are visited
    /// with the call's own path, so a tensor rebuilt by
    /// `_rebuild_tensor_v2(storage, ...)` names its storage by the key it
    /// is stored under. Each container is visited once (the first path
    /// wins), at most [`MAX_DEPTH`] deep; a call's argument tuple counts as
    /// visited once its items have been, so a tuple shared by many calls is
    /// gone through once.
    ///
    /// The path is not built unless the visitor renders it ([`WalkPath`]
    /// is a chain of parent links), so a pickle that names one long string
    /// many times costs the walk a few words per reference, not a copy of
    /// the string each time.
    pub fn walk(&self, mut visit: impl FnMut(&WalkPath<'_>, Value)) {
        let Some(root) = self.root else { return };
        let mut seen = vec![false; self.objs.len()];
        let mut nodes: Vec<PathNode> = Vec::new();
        // (value, path node or ROOT, depth); a container's children are
        // pushed, then reversed in place so that they are visited in order.
        let mut todo: Vec<(Value, u32, usize)> = vec![(root, ROOT, 0)];
        while let Some((v, node, depth)) = todo.pop() {
            visit(
                &WalkPath {
                    pickle: self,
                    nodes: &nodes,
                    node,
                },
                v,
            );
            let Value::Obj(i) = v else { continue };
            if depth >= MAX_DEPTH || std::mem::replace(&mut seen[i as usize], true) {
                continue;
            }
            let d = depth + 1;
            let mut child = |key: Key| {
                nodes.push(PathNode { parent: node, key });
                (nodes.len() - 1) as u32
            };
            let start = todo.len();
            let next = &mut todo;
            match &self.objs[i as usize] {
                Obj::Tuple(xs) | Obj::List(xs) | Obj::Set(xs) => {
                    for (k, x) in xs.iter().enumerate() {
                        next.push((*x, child(Key::Index(k as u64)), d));
                    }
                }
                Obj::Dict(items) => {
                    for (k, x) in items {
                        next.push((*x, child(Key::Of(*k)), d));
                    }
                }
                Obj::Call {
                    args,
                    state,
                    items,
                    elems,
                    ..
                } => {
                    match args {
                        Value::Obj(a) => match &self.objs[*a as usize] {
                            Obj::Tuple(xs) if !seen[*a as usize] => {
                                seen[*a as usize] = true;
                                for x in xs {
                                    next.push((*x, node, d));
                                }
                            }
                            _ => next.push((*args, node, d)),
                        },
                        _ => next.push((*args, node, d)),
                    }
                    for (k, x) in items {
                        next.push((*x, child(Key::Of(*k)), d));
                    }
                    for (k, x) in elems.iter().enumerate() {
                        next.push((*x, child(Key::Index(k as u64)), d));
                    }
                    if let Some(s) = state {
                        next.push((*s, node, d));
                    }
                }
                Obj::Persistent(p) => next.push((*p, node, d)),
            }
            todo[start..].reverse();
        }
    }

    /// Writes a dict key as a path component, at most [`MAX_KEY_PART`]
    /// bytes of it.
    fn write_key(&self, k: Key, out: &mut String) {
        use std::fmt::Write;
        match k {
            Key::Index(i) => {
                let _ = write!(out, "{i}");
            }
            Key::Of(v @ Value::Str(_)) => {
                let s = self.string(v).unwrap_or_default();
                if s.len() <= MAX_KEY_PART {
                    out.push_str(s);
                } else {
                    out.push_str(&s[..floor_char_boundary(s, MAX_KEY_PART)]);
                    out.push('…');
                }
            }
            Key::Of(Value::Int(i)) => {
                let _ = write!(out, "{i}");
            }
            Key::Of(Value::Bool(b)) => {
                let _ = write!(out, "{b}");
            }
            Key::Of(Value::None) => out.push_str("None"),
            Key::Of(_) => out.push('?'),
        }
    }

    /// Whether a key renders as the empty string.
    fn key_is_empty(&self, k: Key) -> bool {
        matches!(k, Key::Of(v @ Value::Str(_)) if self.string(v).unwrap_or_default().is_empty())
    }
}

/// The most bytes of one dict key a [`WalkPath`] renders; a longer key is
/// cut there and ends with `…`.
pub const MAX_KEY_PART: usize = 200;

/// The most bytes a rendered [`WalkPath`] has before it is cut and ends
/// with `…`.
pub const MAX_PATH: usize = 1024;

/// The parent of the root's children.
const ROOT: u32 = u32::MAX;

/// One step of a path: a dict key or an index.
#[derive(Debug, Clone, Copy)]
enum Key {
    Index(u64),
    Of(Value),
}

#[derive(Debug, Clone, Copy)]
struct PathNode {
    parent: u32,
    key: Key,
}

/// Where [`Pickle::walk`] found a value: rendered (with `Display`) as the
/// dict keys and indices from the root joined with `.`, each key cut to
/// [`MAX_KEY_PART`] bytes and the whole to [`MAX_PATH`] bytes. Nothing is
/// built until it is rendered.
pub struct WalkPath<'a> {
    pickle: &'a Pickle,
    nodes: &'a [PathNode],
    node: u32,
}

impl WalkPath<'_> {
    /// The keys from the root down (at most [`MAX_DEPTH`] of them).
    fn keys(&self) -> Vec<Key> {
        let mut keys = Vec::new();
        let mut n = self.node;
        while n != ROOT {
            let node = self.nodes[n as usize];
            keys.push(node.key);
            n = node.parent;
        }
        keys.reverse();
        keys
    }

    /// Whether the path renders as the empty string (the root, or only
    /// empty keys on the way to it).
    pub fn is_empty(&self) -> bool {
        let mut n = self.node;
        while n != ROOT {
            let node = self.nodes[n as usize];
            if !self.pickle.key_is_empty(node.key) {
                return false;
            }
            n = node.parent;
        }
        true
    }
}

impl std::fmt::Display for WalkPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        for k in self.keys() {
            // An empty path takes the key as it is; a key after a path
            // follows a `.` (so leading empty keys leave no dots).
            if !out.is_empty() {
                out.push('.');
            }
            self.pickle.write_key(k, &mut out);
            if out.len() > MAX_PATH {
                break;
            }
        }
        if out.len() > MAX_PATH {
            out.truncate(floor_char_boundary(&out, MAX_PATH));
            out.push('…');
        }
        f.write_str(&out)
    }
}

impl std::fmt::Debug for WalkPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Reads the pickle that starts at `start` in `bytes`, up to its `STOP`
/// opcode or to the first thing it cannot read.
pub fn read(bytes: &[u8], start: usize) -> Pickle {
    let mut m = Machine {
        p: Pickle::default(),
        data: bytes,
        pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        string_ids: HashMap::new(),
    };
    if let Err(why) = m.run() {
        m.p.stopped = Some(why);
    }
    m.p
}

struct Machine<'a> {
    p: Pickle,
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    /// Strings already stored (pickles repeat keys like 'storage' and 'cpu').
    string_ids: HashMap<String, u32>,
}

type Step = Result<(), String>;

impl Machine<'_> {
    fn take(&mut self, n: u64) -> Result<&[u8], String> {
        let at = self.pos;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| at.checked_add(n))
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "the pickle ends at offset {} inside an argument of {n} bytes at offset {at} (truncated?)",
                    self.data.len()
                )
            })?;
        self.pos = end;
        Ok(&self.data[at..end])
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let b = self.take(n as u64)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    }

    /// A protocol 0 argument: bytes up to the next newline.
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("no newline after the text argument at offset {}", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, s: String) -> Value {
        if let Some(&i) = self.string_ids.get(&s) {
            return Value::Str(i);
        }
        let i = self.p.strings.len() as u32;
        self.string_ids.insert(s.clone(), i);
        self.p.strings.push(s);
        Value::Str(i)
    }

    fn text(&mut self, n: u64) -> Result<Value, String> {
        let s = String::from_utf8_lossy(self.take(n)?).into_owned();
        Ok(self.string(s))
    }

    fn new_obj(&mut self, o: Obj) -> Value {
        self.p.objs.push(o);
        Value::Obj(self.p.objs.len() as u32 - 1)
    }

    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.stack.len() <= self.base() {
            return Err(format!("stack underflow at offset {}", self.pos));
        }
        Ok(self.stack.pop().unwrap())
    }

    fn top(&self) -> Result<Value, String> {
        if self.stack.len() <= self.base() {
            return Err(format!("empty stack at offset {}", self.pos));
        }
        Ok(*self.stack.last().unwrap())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| format!("no MARK before offset {}", self.pos))?;
        Ok(self.stack.split_off(m))
    }

    fn int(&mut self, v: i64) -> Step {
        self.stack.push(Value::Int(v));
        Ok(())
    }

    /// A little-endian two's complement integer of `n` bytes (LONG1, LONG4).
    fn long(&mut self, n: u64) -> Step {
        let b = self.take(n)?;
        let v = if b.is_empty() {
            Value::Int(0)
        } else if b.len() <= 8 {
            let fill = if b[b.len() - 1] & 0x80 != 0 { 0xFF } else { 0 };
            let mut v = [fill; 8];
            v[..b.len()].copy_from_slice(b);
            Value::Int(i64::from_le_bytes(v))
        } else {
            Value::BigInt
        };
        self.stack.push(v);
        Ok(())
    }

    fn memo_get(&mut self, k: u64) -> Step {
        let v = *self
            .memo
            .get(&k)
            .ok_or_else(|| format!("memo key {k} is not set (offset {})", self.pos))?;
        self.stack.push(v);
        Ok(())
    }

    fn memo_put(&mut self, k: u64) -> Step {
        let v = self.top()?;
        self.memo.insert(k, v);
        Ok(())
    }

    fn call(&mut self, func: Value, args: Value) -> Step {
        self.p.calls.push(func);
        let v = self.new_obj(Obj::Call {
            func,
            args,
            state: None,
            items: Vec::new(),
            elems: Vec::new(),
        });
        self.stack.push(v);
        Ok(())
    }

    fn global(&mut self, module: String, name: String, at: usize) -> Step {
        let (Value::Str(m), Value::Str(n)) = (self.string(module), self.string(name)) else {
            unreachable!("strings are Value::Str")
        };
        self.global_ids(m, n, at)
    }

    fn global_ids(&mut self, module: u32, name: u32, at: usize) -> Step {
        self.p.globals.push((module, name, at));
        self.stack
            .push(Value::Global(self.p.globals.len() as u32 - 1));
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Step {
        if !items.len().is_multiple_of(2) {
            return Err(format!("odd number of dict items at offset {}", self.pos));
        }
        let target = self.top()?;
        let pairs = items.chunks_exact(2).map(|kv| (kv[0], kv[1]));
        match target {
            Value::Obj(i) => match &mut self.p.objs[i as usize] {
                Obj::Dict(d) | Obj::Call { items: d, .. } => {
                    d.extend(pairs);
                    Ok(())
                }
                _ => Err(format!("SETITEM on a non-dict at offset {}", self.pos)),
            },
            _ => Err(format!("SETITEM on a non-dict at offset {}", self.pos)),
        }
    }

    fn append(&mut self, items: Vec<Value>) -> Step {
        let target = self.top()?;
        match target {
            Value::Obj(i) => match &mut self.p.objs[i as usize] {
                Obj::List(l) | Obj::Set(l) | Obj::Call { elems: l, .. } => {
                    l.extend(items);
                    Ok(())
                }
                _ => Err(format!("APPEND on a non-list at offset {}", self.pos)),
            },
            _ => Err(format!("APPEND on a non-list at offset {}", self.pos)),
        }
    }

    fn run(&mut self) -> Step {
        loop {
            let at = self.pos;
            let op = *self.data.get(at).ok_or_else(|| {
                format!("the pickle ends at offset {at} before its STOP opcode (truncated?)")
            })?;
            self.pos += 1;
            match op {
                b'.' => {
                    // STOP
                    let v = self.pop()?;
                    self.p.root = Some(v);
                    self.p.end = Some(self.pos);
                    return Ok(());
                }
                0x80 => {
                    // PROTO
                    self.take(1)?;
                }
                0x95 => {
                    // FRAME: a length prefix for buffering; the opcodes go on.
                    self.take(8)?;
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    // POP: a value, or the topmost mark if none is above it.
                    if self.stack.len() > self.base() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.uint(1)? as i64;
                    self.int(v)?
                }
                b'M' => {
                    let v = self.uint(2)? as i64;
                    self.int(v)?
                }
                b'J' => {
                    let v = self.uint(4)? as u32 as i32 as i64;
                    self.int(v)?
                }
                0x8a => {
                    let n = self.uint(1)?;
                    self.long(n)?
                }
                0x8b => {
                    let n = self.uint(4)?;
                    self.long(n)?
                }
                b'I' => {
                    let l = self.line()?;
                    let v = match l.as_str() {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        s => s.parse().map(Value::Int).unwrap_or(Value::BigInt),
                    };
                    self.stack.push(v);
                }
                b'L' => {
                    let l = self.line()?;
                    let v = l.trim_end_matches('L').parse().map(Value::Int);
                    self.stack.push(v.unwrap_or(Value::BigInt));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().unwrap());
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let l = self.line()?;
                    self.stack.push(Value::Float(l.parse().unwrap_or(f64::NAN)));
                }
                b'X' => {
                    let n = self.uint(4)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.uint(1)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.uint(8)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'T' => {
                    let n = self.uint(4)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'U' => {
                    let n = self.uint(1)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'S' | b'V' => {
                    // Protocol 0 strings: a quoted repr, or raw-unicode-escape.
                    let l = self.line()?;
                    let s = match (op, l.strip_prefix(['\'', '"'])) {
                        (b'S', Some(inner)) => {
                            inner.strip_suffix(['\'', '"']).unwrap_or(inner).to_string()
                        }
                        _ => l,
                    };
                    let v = self.string(s);
                    self.stack.push(v);
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = self.uint(match op {
                        b'B' => 4,
                        b'C' => 1,
                        _ => 8,
                    })?;
                    self.take(n)?;
                    self.stack.push(Value::Bytes(n));
                }
                b')' => {
                    let v = self.new_obj(Obj::Tuple(Vec::new()));
                    self.stack.push(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::Tuple(items));
                    self.stack.push(v);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < self.base() + n {
                        return Err(format!("stack underflow at offset {at}"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let v = self.new_obj(Obj::Tuple(items));
                    self.stack.push(v);
                }
                b']' => {
                    let v = self.new_obj(Obj::List(Vec::new()));
                    self.stack.push(v);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::List(items));
                    self.stack.push(v);
                }
                b'}' => {
                    let v = self.new_obj(Obj::Dict(Vec::new()));
                    self.stack.push(v);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        return Err(format!("odd number of dict items at offset {at}"));
                    }
                    let pairs = items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect();
                    let v = self.new_obj(Obj::Dict(pairs));
                    self.stack.push(v);
                }
                0x8f => {
                    let v = self.new_obj(Obj::Set(Vec::new()));
                    self.stack.push(v);
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::Set(items));
                    self.stack.push(v);
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name, at)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(m), Value::Str(n)) = (module, name) else {
                        return Err(format!("STACK_GLOBAL without two strings at offset {at}"));
                    };
                    self.global_ids(m, n, at)?
                }
                0x82..=0x84 => {
                    // EXT1/2/4: a registered extension code, named as such.
                    let code = self.uint(1 << (op - 0x82).min(2))?;
                    self.global("copyreg extension".into(), code.to_string(), at)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    self.call(func, args)?
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.call(cls, args)?
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.call(cls, args)?
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let items = self.pop_mark()?;
                    self.global(module, name, at)?;
                    let func = self.stack.pop().unwrap();
                    let args = self.new_obj(Obj::Tuple(items));
                    self.call(func, args)?
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err(format!("OBJ without a class at offset {at}"));
                    }
                    let cls = items.remove(0);
                    let args = self.new_obj(Obj::Tuple(items));
                    self.call(cls, args)?
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    if let Value::Obj(i) = target
                        && let Obj::Call { state: s, .. } = &mut self.p.objs[i as usize]
                    {
                        *s = Some(state);
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.p.persistent_ids.push(pid);
                    let v = self.new_obj(Obj::Persistent(pid));
                    self.stack.push(v);
                }
                b'P' => {
                    let l = self.line()?;
                    let pid = self.string(l);
                    self.p.persistent_ids.push(pid);
                    let v = self.new_obj(Obj::Persistent(pid));
                    self.stack.push(v);
                }
                b'h' => {
                    let k = self.uint(1)?;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.uint(4)?;
                    self.memo_get(k)?
                }
                b'g' => {
                    let k = self.line()?;
                    let k = k
                        .parse()
                        .map_err(|_| format!("bad GET key at offset {at}"))?;
                    self.memo_get(k)?
                }
                b'q' => {
                    let k = self.uint(1)?;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.uint(4)?;
                    self.memo_put(k)?
                }
                b'p' => {
                    let k = self.line()?;
                    let k = k
                        .parse()
                        .map_err(|_| format!("bad PUT key at offset {at}"))?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                _ => {
                    return Err(format!(
                        "opcode 0x{op:02x} at offset {at} is not one this reader knows"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protocol 2 pickle of `{'a': 1, 'b': [2, 'x'], 'c': (None, True)}`,
    /// as Python 3.11 writes it.
    const SMALL: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(K\x02X\x01\x00\x00\x00xq\x04eX\x01\x00\x00\x00cq\x05N\x88\x86q\x06u.";

    fn paths(p: &Pickle) -> Vec<(String, Value)> {
        let mut v = Vec::new();
        p.walk(|path, x| v.push((path.to_string(), x)));
        v
    }

    #[test]
    fn reads_containers() {
        let p = read(SMALL, 0);
        assert_eq!(p.stopped, None);
        assert_eq!(p.end, Some(SMALL.len()));
        let v = paths(&p);
        let leaves: Vec<_> = v
            .iter()
            .filter(|(_, x)| !matches!(x, Value::Obj(_)))
            .map(|(k, x)| {
                (
                    k.as_str(),
                    p.string(*x).map(str::to_string).unwrap_or(format!("{x:?}")),
                )
            })
            .collect();
        assert_eq!(
            leaves,
            [
                ("a", "Int(1)".to_string()),
                ("b.0", "Int(2)".to_string()),
                ("b.1", "x".to_string()),
                ("c.0", "None".to_string()),
                ("c.1", "Bool(true)".to_string())
            ]
        );
    }

    /// `GLOBAL os.system` and `REDUCE`: recorded as a call, never made.
    #[test]
    fn calls_are_recorded_not_made() {
        let evil = b"cos\nsystem\n(S'touch /tmp/pwned'\ntR.";
        let p = read(evil, 0);
        assert_eq!(p.stopped, None);
        assert_eq!(p.calls.len(), 1);
        assert_eq!(p.global(p.calls[0]), Some(("os", "system")));
        let Some(Obj::Call { args, .. }) = p.obj(p.root.unwrap()) else {
            panic!()
        };
        let a = p.tuple(*args).unwrap();
        assert_eq!(p.string(a[0]), Some("touch /tmp/pwned"));
    }

    #[test]
    fn unknown_opcodes_and_truncation_stop_reading() {
        let mut b = SMALL.to_vec();
        b.insert(2, 0xFF);
        let p = read(&b, 0);
        assert!(p.stopped.unwrap().contains("opcode 0xff at offset 2"));
        assert_eq!(p.end, None);
        for n in 0..SMALL.len() {
            let p = read(&SMALL[..n], 0);
            assert!(p.stopped.is_some() && p.end.is_none(), "{n}");
        }
        // Underflow, unset memo keys, odd dicts.
        for bad in [&b"t."[..], b"h\x05.", b"(K\x01d.", b"(}K\x01u.", b"K\x01a."] {
            assert!(read(bad, 0).stopped.is_some(), "{bad:?}");
        }
    }

    #[test]
    fn persistent_ids_and_integers() {
        // (('storage', torch.FloatStorage, '0', 'cpu', 70000),) via BINPERSID, then LONG1 -1.
        let mut b = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJp\x11\x01\x00tQ\x8a\x01\xff\x86.".to_vec();
        let p = read(&b, 0);
        assert_eq!(p.stopped, None, "{:?}", p.stopped);
        assert_eq!(p.persistent_ids.len(), 1);
        let t = p.tuple(p.persistent_ids[0]).unwrap();
        assert_eq!(p.string(t[0]), Some("storage"));
        assert_eq!(p.global(t[1]), Some(("torch", "FloatStorage")));
        assert_eq!(t[4], Value::Int(70000));
        let root = p.tuple(p.root.unwrap()).unwrap();
        assert_eq!(root[1], Value::Int(-1));
        // Reading starts where it is told to.
        b.splice(0..0, *b"junk");
        assert_eq!(read(&b, 4).end, Some(b.len()));
    }

    /// Self-referencing containers and deep nesting end.
    #[test]
    fn cycles_and_depth() {
        // l = []; l.append(l)
        let p = read(b"]q\x00h\x00a.", 0);
        assert_eq!(p.stopped, None);
        assert_eq!(paths(&p).len(), 2);
        let mut deep = vec![b'('; 10_000];
        deep.extend(std::iter::repeat_n(b'l', 10_000));
        deep.push(b'.');
        let p = read(&deep, 0);
        assert_eq!(p.stopped, None);
        assert_eq!(paths(&p).len(), MAX_DEPTH + 1);
    }

    /// A short string opcode: `X` and a 4-byte length.
    fn unicode(s: &str) -> Vec<u8> {
        let mut b = vec![b'X'];
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
        b
    }

    /// Empty keys leave no leading dots, as joining did before paths were
    /// rendered lazily; long keys and long paths are cut.
    #[test]
    fn path_text_and_caps() {
        // {'': {'a': {'': 1}}}
        let mut b = b"\x80\x02}".to_vec();
        b.extend(unicode(""));
        b.push(b'}');
        b.extend(unicode("a"));
        b.push(b'}');
        b.extend(unicode(""));
        b.extend_from_slice(b"K\x01sss.");
        let p = read(&b, 0);
        assert_eq!(p.stopped, None, "{:?}", p.stopped);
        let mut got = Vec::new();
        p.walk(|path, _| got.push((path.to_string(), path.is_empty())));
        assert_eq!(
            got,
            [
                (String::new(), true),
                (String::new(), true),
                ("a".to_string(), false),
                ("a.".to_string(), false)
            ]
        );
        // 300 nested dicts, each under the same memoized 1000-byte key.
        let key = "é".repeat(500);
        let mut b = b"\x80\x02".to_vec();
        b.push(b'}');
        b.extend(unicode(&key));
        b.extend_from_slice(b"q\x00");
        for _ in 1..300 {
            b.extend_from_slice(b"}h\x00");
        }
        b.extend_from_slice(b"N");
        b.extend(std::iter::repeat_n(b's', 300));
        b.push(b'.');
        let p = read(&b, 0);
        assert_eq!(p.stopped, None, "{:?}", p.stopped);
        let mut longest = String::new();
        let mut n = 0;
        p.walk(|path, _| {
            n += 1;
            let s = path.to_string();
            if n == 2 {
                assert_eq!(s, format!("{}…", &key[..MAX_KEY_PART]));
            }
            if s.len() > longest.len() {
                longest = s;
            }
        });
        assert_eq!(n, MAX_DEPTH + 1);
        let mut visited = 0usize;
        p.walk(|_, _| visited += 1); // as fuzz/src/parsers.rs calls it
        assert_eq!(visited, n);
        assert!(
            longest.len() <= MAX_PATH + '…'.len_utf8(),
            "{}",
            longest.len()
        );
        assert!(longest.len() > MAX_PATH - MAX_KEY_PART && longest.ends_with('…'));
    }
}

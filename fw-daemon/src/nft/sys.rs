//! The only `unsafe` in fw: nftables objects and expressions nftnl 0.9 has no wrapper for
//! (and the registration of netlink sockets with the runtime, `async_socket`),
//! written over nftnl-sys. Each type allocates an nftnl object, sets attributes, and hands
//! it to nftnl (an expression to a rule, a set to a batch message). Covered by the
//! real-netns tests in `tests/enforce.rs`, which program every expression here into a
//! kernel and check packets and `nft list` against it.

use std::ffi::{c_void, CStr, CString};
use std::os::raw::c_char;
use std::ptr::NonNull;

use nftnl::expr::Expression;
use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{MsgType, NlMsg, Rule};

/// Allocates a named expression; aborts on OOM like nftnl does (allocations are tiny).
fn alloc_expr(name: &CStr) -> NonNull<sys::nftnl_expr> {
    // SAFETY: `name` is a valid NUL-terminated string naming a kernel expression type;
    // nftnl copies it. A NULL return (OOM) is handled below.
    let ptr = unsafe { sys::nftnl_expr_alloc(name.as_ptr()) };
    NonNull::new(ptr).unwrap_or_else(|| std::process::abort())
}

/// `log prefix "..." group N [snaplen S]`: an NFLOG record to the daemon.
pub struct Log {
    pub group: u16,
    pub prefix: CString,
    pub snaplen: Option<u32>,
}

impl Expression for Log {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"log");
        // SAFETY: `e` is a live log expression; attribute ids and value types match
        // libnftnl's log expression (u16 group, string prefix, u32 snaplen); the prefix is
        // copied by nftnl before `self` can go away.
        unsafe {
            sys::nftnl_expr_set_u16(e.as_ptr(), sys::NFTNL_EXPR_LOG_GROUP as u16, self.group);
            sys::nftnl_expr_set_str(e.as_ptr(), sys::NFTNL_EXPR_LOG_PREFIX as u16, self.prefix.as_ptr());
            if let Some(s) = self.snaplen {
                sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_LOG_SNAPLEN as u16, s);
            }
        }
        e
    }
}

/// `limit rate [over] R/second burst B packets|bytes`.
pub struct Limit {
    pub rate: u64,
    pub burst: u32,
    pub bytes: bool,
    /// Match when the rate is exceeded (`over`) instead of while under it.
    pub over: bool,
}

const NFT_LIMIT_PKTS: u32 = 0;
const NFT_LIMIT_PKT_BYTES: u32 = 1;
const NFT_LIMIT_F_INV: u32 = 1;

impl Expression for Limit {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"limit");
        // SAFETY: live limit expression; u64 rate and unit (seconds), u32 burst, type, flags
        // as libnftnl's limit expression defines them.
        unsafe {
            sys::nftnl_expr_set_u64(e.as_ptr(), sys::NFTNL_EXPR_LIMIT_RATE as u16, self.rate);
            sys::nftnl_expr_set_u64(e.as_ptr(), sys::NFTNL_EXPR_LIMIT_UNIT as u16, 1);
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_LIMIT_BURST as u16, self.burst);
            let ty = if self.bytes { NFT_LIMIT_PKT_BYTES } else { NFT_LIMIT_PKTS };
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_LIMIT_TYPE as u16, ty);
            let flags = if self.over { NFT_LIMIT_F_INV } else { 0 };
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_LIMIT_FLAGS as u16, flags);
        }
        e
    }
}

/// `ct count [over] N` (connlimit): connections tracked through this rule.
pub struct Connlimit {
    pub count: u32,
    pub over: bool,
}

impl Expression for Connlimit {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"connlimit");
        // SAFETY: live connlimit expression; both attributes are u32.
        unsafe {
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_CONNLIMIT_COUNT as u16, self.count);
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_CONNLIMIT_FLAGS as u16, u32::from(self.over));
        }
        e
    }
}

/// `lookup` of register 1 in a set named in this batch or already in the table. nftnl's own
/// `Lookup` needs an nftnl `Set` object; ours are `RawSet`s.
pub struct Lookup {
    pub set: CString,
    pub set_id: u32,
    /// The first register of the key: `NFT_REG_1`, or `NFT_REG32_00` for concatenations.
    pub sreg: u32,
    /// Match when the key is NOT in the set (`!= @set`).
    pub invert: bool,
    /// For a verdict map (`vmap`): the element's verdict goes to `NFT_REG_VERDICT`.
    pub verdict_map: bool,
}

const NFT_LOOKUP_F_INV: u32 = 1;

impl Expression for Lookup {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"lookup");
        // SAFETY: live lookup expression; u32 register and set id, string set name (copied).
        unsafe {
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_LOOKUP_SREG as u16, self.sreg);
            sys::nftnl_expr_set_str(e.as_ptr(), sys::NFTNL_EXPR_LOOKUP_SET as u16, self.set.as_ptr());
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_LOOKUP_SET_ID as u16, self.set_id);
            if self.invert {
                sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_LOOKUP_FLAGS as u16, NFT_LOOKUP_F_INV);
            }
            if self.verdict_map {
                sys::nftnl_expr_set_u32(
                    e.as_ptr(),
                    sys::NFTNL_EXPR_LOOKUP_DREG as u16,
                    libc::NFT_REG_VERDICT as u32,
                );
            }
        }
        e
    }
}

/// `update @set { KEY timeout T }`: adds the key in registers from `sreg` to a dynamic set,
/// or refreshes the timeout of the element already there. nftnl 0.9 has no dynset.
pub struct Dynset {
    pub set: CString,
    pub set_id: u32,
    pub sreg: u32,
    pub timeout_ms: u64,
    /// `add` (leave a present element as it is) rather than `update` (refresh it).
    pub add_only: bool,
}

const NFT_DYNSET_OP_ADD: u32 = 0;
const NFT_DYNSET_OP_UPDATE: u32 = 1;

impl Expression for Dynset {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"dynset");
        let op = if self.add_only { NFT_DYNSET_OP_ADD } else { NFT_DYNSET_OP_UPDATE };
        // SAFETY: live dynset expression; attribute ids match libnftnl's dynset (u32 register,
        // op and set id, u64 timeout in ms, string set name copied by nftnl).
        unsafe {
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_DYNSET_SREG_KEY as u16, self.sreg);
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_DYNSET_OP as u16, op);
            sys::nftnl_expr_set_u64(e.as_ptr(), sys::NFTNL_EXPR_DYNSET_TIMEOUT as u16, self.timeout_ms);
            sys::nftnl_expr_set_str(e.as_ptr(), sys::NFTNL_EXPR_DYNSET_SET_NAME as u16, self.set.as_ptr());
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_DYNSET_SET_ID as u16, self.set_id);
        }
        e
    }
}

/// `payload load` of `len` bytes at `offset` from a header `base` into register `dreg`:
/// nftnl's `Payload` always loads register 1, and concatenated keys need consecutive
/// 32-bit registers.
pub struct RawPayload {
    pub base: u32,
    pub offset: u32,
    pub len: u32,
    pub dreg: u32,
}

impl Expression for RawPayload {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"payload");
        // SAFETY: live payload expression; every attribute is a u32.
        unsafe {
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_PAYLOAD_DREG as u16, self.dreg);
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_PAYLOAD_BASE as u16, self.base);
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_PAYLOAD_OFFSET as u16, self.offset);
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_PAYLOAD_LEN as u16, self.len);
        }
        e
    }
}

/// `meta KEY` into register `dreg` (see `RawPayload`).
pub struct RawMeta {
    pub key: u32,
    pub dreg: u32,
}

impl Expression for RawMeta {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"meta");
        // SAFETY: live meta expression; both attributes are u32.
        unsafe {
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_META_KEY as u16, self.key);
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_META_DREG as u16, self.dreg);
        }
        e
    }
}

/// `ct KEY` into register `dreg` (see `RawPayload`): keys nftnl's `Conntrack` lacks
/// (`ct direction`).
pub struct RawCt {
    pub key: u32,
    pub dreg: u32,
}

impl Expression for RawCt {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"ct");
        // SAFETY: live ct expression; both attributes are u32.
        unsafe {
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_CT_KEY as u16, self.key);
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_CT_DREG as u16, self.dreg);
        }
        e
    }
}

/// `queue num N [bypass]`: the xtables NFQUEUE target through nft's compat layer (this
/// kernel has no native `queue` expression). Revision 3 takes `struct xt_NFQ_info_v3
/// { u16 queuenum; u16 queues_total; u16 flags; }` in host order; nft lists it natively.
pub struct NfQueue {
    pub num: u16,
    /// `NFQ_FLAG_BYPASS`: accept instead of drop while no listener is bound.
    pub bypass: bool,
}

const NFQ_FLAG_BYPASS: u16 = 0x01;
/// XT_ALIGN(sizeof(struct xt_NFQ_info_v3)): what iptables-nft sends and the kernel expects.
const NFQ_INFO_LEN: usize = 8;

impl Expression for NfQueue {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"target");
        let mut info = [0u8; NFQ_INFO_LEN];
        info[0..2].copy_from_slice(&self.num.to_ne_bytes());
        info[2..4].copy_from_slice(&1u16.to_ne_bytes()); // queues_total: no balancing
        let flags = if self.bypass { NFQ_FLAG_BYPASS } else { 0 };
        info[4..6].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: live target expression. The name string is copied by nftnl. The info
        // buffer is malloc'ed here and handed over: libnftnl keeps the pointer it is given
        // for NFTNL_EXPR_TG_INFO and frees it with the expression (xfree), so it must come
        // from malloc and must not be freed here. A NULL malloc (OOM) aborts like nftnl does.
        unsafe {
            sys::nftnl_expr_set_str(e.as_ptr(), sys::NFTNL_EXPR_TG_NAME as u16, c"NFQUEUE".as_ptr());
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_TG_REV as u16, 3);
            let buf = libc::malloc(NFQ_INFO_LEN) as *mut u8;
            if buf.is_null() {
                std::process::abort();
            }
            std::ptr::copy_nonoverlapping(info.as_ptr(), buf, NFQ_INFO_LEN);
            sys::nftnl_expr_set(
                e.as_ptr(),
                sys::NFTNL_EXPR_TG_INFO as u16,
                buf as *const c_void,
                NFQ_INFO_LEN as u32,
            );
        }
        e
    }
}

/// `range eq FROM TO` on register 1 (big-endian bytes), e.g. `th dport 8000-8100`.
pub struct Range {
    pub from: Vec<u8>,
    pub to: Vec<u8>,
}

const NFT_RANGE_EQ: u32 = 0;

impl Expression for Range {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        let e = alloc_expr(c"range");
        // SAFETY: live range expression; the data pointers are valid for their lengths and
        // nftnl copies them.
        unsafe {
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_RANGE_SREG as u16, libc::NFT_REG_1 as u32);
            sys::nftnl_expr_set_u32(e.as_ptr(), sys::NFTNL_EXPR_RANGE_OP as u16, NFT_RANGE_EQ);
            sys::nftnl_expr_set(
                e.as_ptr(),
                sys::NFTNL_EXPR_RANGE_FROM_DATA as u16,
                self.from.as_ptr() as *const c_void,
                self.from.len() as u32,
            );
            sys::nftnl_expr_set(
                e.as_ptr(),
                sys::NFTNL_EXPR_RANGE_TO_DATA as u16,
                self.to.as_ptr() as *const c_void,
                self.to.len() as u32,
            );
        }
        e
    }
}

/// Key types as nft understands them (so `nft list` prints our sets naturally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    NfProto,
    Ipv4,
    Ipv6,
    InetProto,
    InetService,
    Icmpv6Type,
    IcmpType,
    EtherType,
    EtherAddr,
    IfIndex,
    /// The operator-block key `saddr . daddr . l4proto . sport . dport` (IPv4 or IPv6).
    Block4,
    Block6,
    /// Operator blocks without ports: `saddr . daddr . l4proto`.
    BlockAddr4,
    BlockAddr6,
    /// Any other concatenation (the floor's port-keyed sets).
    Fields(&'static [KeyKind]),
}

use crate::ruleset::ir::KeyKind;

impl KeyType {
    fn of(k: KeyKind) -> KeyType {
        match k {
            KeyKind::IfIndex => KeyType::IfIndex,
            KeyKind::EtherAddr => KeyType::EtherAddr,
            KeyKind::Ipv4 => KeyType::Ipv4,
            KeyKind::Ipv6 => KeyType::Ipv6,
            KeyKind::InetProto => KeyType::InetProto,
            KeyKind::InetService => KeyType::InetService,
        }
    }

    fn nft_type(self) -> u32 {
        match self {
            KeyType::NfProto => 2,
            KeyType::Ipv4 => 7,
            KeyType::Ipv6 => 8,
            KeyType::InetProto => 12,
            KeyType::InetService => 13,
            KeyType::Icmpv6Type => 29,
            KeyType::IcmpType => 14,
            KeyType::EtherType => 10,
            KeyType::EtherAddr => 9,
            KeyType::IfIndex => 20,
            KeyType::Fields([one]) => KeyType::of(*one).nft_type(),
            // nft's concatenated type: each field's type shifted in, 6 bits apiece (nft
            // itself loses the first fields of keys longer than five; so do we).
            _ => self.fields().iter().fold(0u32, |t, f| t.wrapping_shl(6) | f.nft_type()),
        }
    }

    /// The fields of a concatenated key; empty for a plain one.
    pub fn fields(self) -> Vec<KeyType> {
        use KeyType::*;
        match self {
            Block4 => vec![Ipv4, Ipv4, InetProto, InetService, InetService],
            Block6 => vec![Ipv6, Ipv6, InetProto, InetService, InetService],
            BlockAddr4 => vec![Ipv4, Ipv4, InetProto],
            BlockAddr6 => vec![Ipv6, Ipv6, InetProto],
            Fields(kinds) if kinds.len() > 1 => kinds.iter().map(|k| KeyType::of(*k)).collect(),
            _ => Vec::new(),
        }
    }

    pub fn len(self) -> u32 {
        match self {
            KeyType::NfProto | KeyType::InetProto | KeyType::Icmpv6Type | KeyType::IcmpType => 1,
            KeyType::InetService | KeyType::EtherType => 2,
            KeyType::Ipv4 | KeyType::IfIndex => 4,
            KeyType::Ipv6 => 16,
            KeyType::EtherAddr => 6,
            KeyType::Fields([one]) => KeyType::of(*one).len(),
            // Each field takes whole 32-bit registers.
            _ => self.fields().iter().map(|f| f.len().div_ceil(4) * 4).sum(),
        }
    }
}

pub const SET_ANONYMOUS: u32 = libc::NFT_SET_ANONYMOUS as u32;
pub const SET_CONSTANT: u32 = libc::NFT_SET_CONSTANT as u32;
pub const SET_INTERVAL: u32 = libc::NFT_SET_INTERVAL as u32;
pub const SET_TIMEOUT: u32 = libc::NFT_SET_TIMEOUT as u32;
pub const SET_CONCAT: u32 = 0x80;
pub const SET_MAP: u32 = libc::NFT_SET_MAP as u32;
/// Updated from the packet path (`dynamic` in nft's listing).
pub const SET_EVAL: u32 = libc::NFT_SET_EVAL as u32;
pub const ELEM_INTERVAL_END: u32 = 1;
/// NFT_MSG_DESTROYSETELEM (kernel >= 6.3): a removal that is not an error when the element
/// is already gone (a block the kernel expired on time).
const NFT_MSG_DESTROYSETELEM: u32 = 30;

/// One set element: key bytes (network order), flags, optional timeout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Elem {
    pub key: Vec<u8>,
    /// The range end, for concatenated interval sets (which take start and end in one element).
    pub key_end: Option<Vec<u8>>,
    pub flags: u32,
    pub timeout_ms: Option<u64>,
    /// In a verdict map: the chain this element jumps to.
    pub jump: Option<CString>,
}

/// An nftables set with the flags, comment, and element timeouts nftnl's `Set` lacks.
pub struct RawSet {
    ptr: NonNull<sys::nftnl_set>,
    /// NFPROTO_* of the set's table (inet for container tables, bridge for the host guard).
    family: u16,
}

// SAFETY: the set is only touched through &self/&mut self; libnftnl objects have no thread
// affinity.
unsafe impl Send for RawSet {}

impl RawSet {
    pub fn new(
        family: u16,
        table: &CStr,
        name: &CStr,
        id: u32,
        key: KeyType,
        flags: u32,
        comment: Option<&str>,
    ) -> RawSet {
        // SAFETY: plain allocation; NULL (OOM) handled below.
        let ptr = NonNull::new(unsafe { sys::nftnl_set_alloc() }).unwrap_or_else(|| std::process::abort());
        // SAFETY: `ptr` is a live set; every attribute id matches its value type; strings are
        // NUL-terminated and copied by nftnl.
        unsafe {
            let s = ptr.as_ptr();
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, family as u32);
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, flags);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, key.nft_type());
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, key.len());
            let fields: Vec<u8> = key.fields().iter().map(|f| f.len() as u8).collect();
            if !fields.is_empty() {
                // The field lengths let the kernel pick the concatenated-range backend.
                sys::nftnl_set_set_data(
                    s,
                    sys::NFTNL_SET_DESC_CONCAT as u16,
                    fields.as_ptr() as *const c_void,
                    fields.len() as u32,
                );
            }
        }
        let set = RawSet { ptr, family };
        if let Some(c) = comment {
            set.set_comment(c);
        }
        if flags & SET_MAP != 0 {
            // SAFETY: live set; the data type is a u32 attribute (the kernel sizes verdicts).
            unsafe {
                sys::nftnl_set_set_u32(ptr.as_ptr(), sys::NFTNL_SET_DATA_TYPE as u16, libc::NFT_DATA_VERDICT);
            }
        }
        set
    }

    /// Bounds the number of elements (dynamic sets fill from the packet path).
    pub fn set_size(&self, size: u32) {
        // SAFETY: live set; the size is a u32 attribute.
        unsafe { sys::nftnl_set_set_u32(self.ptr.as_ptr(), sys::NFTNL_SET_DESC_SIZE as u16, size) };
    }

    fn set_comment(&self, comment: &str) {
        let Ok(c) = CString::new(comment.chars().take(120).collect::<String>()) else { return };
        // SAFETY: udata buffer allocated with its max size; put_strz copies at most that;
        // set_data copies `len` bytes from the buffer before we free it.
        unsafe {
            let buf = sys::nftnl_udata_buf_alloc(sys::NFTNL_UDATA_COMMENT_MAXLEN + 8);
            if buf.is_null() {
                return;
            }
            if sys::nftnl_udata_put_strz(buf, sys::NFTNL_UDATA_SET_COMMENT as u8, c.as_ptr()) {
                sys::nftnl_set_set_data(
                    self.ptr.as_ptr(),
                    sys::NFTNL_SET_USERDATA as u16,
                    sys::nftnl_udata_buf_data(buf),
                    sys::nftnl_udata_buf_len(buf),
                );
            }
            sys::nftnl_udata_buf_free(buf);
        }
    }

    pub fn add(&mut self, elem: &Elem) {
        // SAFETY: a fresh element; the key pointer is valid for its length and copied; the
        // set takes ownership of the element (freed with the set).
        unsafe {
            let e = sys::nftnl_set_elem_alloc();
            if e.is_null() {
                std::process::abort();
            }
            sys::nftnl_set_elem_set(
                e,
                sys::NFTNL_SET_ELEM_KEY as u16,
                elem.key.as_ptr() as *const c_void,
                elem.key.len() as u32,
            );
            if let Some(end) = &elem.key_end {
                sys::nftnl_set_elem_set(
                    e,
                    sys::NFTNL_SET_ELEM_KEY_END as u16,
                    end.as_ptr() as *const c_void,
                    end.len() as u32,
                );
            }
            if elem.flags != 0 {
                sys::nftnl_set_elem_set_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16, elem.flags);
            }
            if let Some(t) = elem.timeout_ms {
                sys::nftnl_set_elem_set_u64(e, sys::NFTNL_SET_ELEM_TIMEOUT as u16, t);
            }
            if let Some(chain) = &elem.jump {
                sys::nftnl_set_elem_set_u32(e, sys::NFTNL_SET_ELEM_VERDICT as u16, libc::NFT_JUMP as u32);
                sys::nftnl_set_elem_set_str(e, sys::NFTNL_SET_ELEM_CHAIN as u16, chain.as_ptr());
            }
            sys::nftnl_set_elem_add(self.ptr.as_ptr(), e);
        }
    }

    /// Element messages for a batch, split to fit the netlink message size.
    pub fn elem_msgs(&self) -> Vec<ElemsMsg<'_>> {
        // SAFETY: the iterator walks this set's element list, which outlives it.
        let iter = unsafe { sys::nftnl_set_elems_iter_create(self.ptr.as_ptr()) };
        let Some(iter) = NonNull::new(iter) else { return Vec::new() };
        let guard = ElemsIter { iter };
        let mut out = Vec::new();
        // SAFETY: `cur` reads the iterator's position; it is null for an empty set.
        if unsafe { sys::nftnl_set_elems_iter_cur(guard.iter.as_ptr()) }.is_null() {
            return Vec::new();
        }
        loop {
            // nftnl lays out as many elements as fit in one message and returns 1 when more
            // remain, 0 when done; build each into a scratch buffer and keep the bytes.
            let mut scratch = vec![0u8; nftnl::nft_nlmsg_maxsize() as usize];
            // SAFETY: scratch has room for the largest netlink message; the header is built
            // inside it and the payload builder stops before overflowing it.
            let more = unsafe {
                let nlh = sys::nftnl_nlmsg_build_hdr(
                    scratch.as_mut_ptr() as *mut c_char,
                    libc::NFT_MSG_NEWSETELEM as u16,
                    self.family,
                    0,
                    0,
                );
                sys::nftnl_set_elems_nlmsg_build_payload_iter(nlh, guard.iter.as_ptr())
            };
            out.push(scratch);
            if more <= 0 {
                break;
            }
        }
        out.into_iter().map(|bytes| ElemsMsg { set: self, bytes }).collect()
    }
}

struct ElemsIter {
    iter: NonNull<sys::nftnl_set_elems_iter>,
}

impl Drop for ElemsIter {
    fn drop(&mut self) {
        // SAFETY: created by nftnl_set_elems_iter_create and destroyed once.
        unsafe { sys::nftnl_set_elems_iter_destroy(self.iter.as_ptr()) };
    }
}

impl Drop for RawSet {
    fn drop(&mut self) {
        // SAFETY: allocated by nftnl_set_alloc and freed once; frees its elements too.
        unsafe { sys::nftnl_set_free(self.ptr.as_ptr()) };
    }
}

// SAFETY: `write` builds one NEWSET/DELSET message into `buf`, which the batch guarantees
// has room for the largest netlink message.
unsafe impl NlMsg for RawSet {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let ty = match msg_type {
            MsgType::Add => libc::NFT_MSG_NEWSET,
            MsgType::Del => libc::NFT_MSG_DELSET,
        };
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_ACK) as u16;
        // SAFETY: see the impl comment; the set is live.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(buf as *mut c_char, ty as u16, self.family, flags, seq);
            sys::nftnl_set_nlmsg_build_payload(nlh, self.ptr.as_ptr());
        }
    }
}

/// One NEWSETELEM/DELSETELEM message's worth of elements. The payload was laid out by
/// nftnl in `elem_msgs`; `write` copies it behind a header with the batch's sequence number.
pub struct ElemsMsg<'a> {
    #[allow(dead_code)]
    set: &'a RawSet,
    bytes: Vec<u8>,
}

const NLMSG_HDRLEN: usize = 16;

// SAFETY: copies a message no larger than the largest netlink message into `buf`, which the
// batch guarantees can hold one.
unsafe impl NlMsg for ElemsMsg<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let len = u32::from_ne_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]) as usize;
        let len = len.min(self.bytes.len());
        let (ty, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSETELEM, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            MsgType::Del => (NFT_MSG_DESTROYSETELEM as _, libc::NLM_F_ACK),
        };
        // SAFETY: `buf` has room for `len` bytes (see the impl comment); the header fields
        // are rewritten in place within the first NLMSG_HDRLEN bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.bytes.as_ptr(), buf as *mut u8, len);
            let nlh = buf as *mut libc::nlmsghdr;
            (*nlh).nlmsg_type = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | ty as u16;
            (*nlh).nlmsg_flags = (libc::NLM_F_REQUEST as u16) | flags as u16;
            (*nlh).nlmsg_seq = seq;
        }
        debug_assert!(len >= NLMSG_HDRLEN);
    }
}

/// `nft flush set`: a DELSETELEM naming the set and no element.
pub struct FlushSet {
    bytes: Vec<u8>,
}

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;

impl FlushSet {
    pub fn new(family: u16, table: &CStr, set: &CStr) -> FlushSet {
        // nlmsghdr (filled in by `write`), nfgenmsg, then two string attributes.
        let mut b = vec![0u8; NLMSG_HDRLEN];
        b.extend_from_slice(&[family as u8, 0, 0, 0]);
        for (ty, v) in [(NFTA_SET_ELEM_LIST_TABLE, table), (NFTA_SET_ELEM_LIST_SET, set)] {
            let v = v.to_bytes_with_nul();
            b.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            b.extend_from_slice(&ty.to_ne_bytes());
            b.extend_from_slice(v);
            b.resize((b.len() + 3) & !3, 0);
        }
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        FlushSet { bytes: b }
    }
}

// SAFETY: copies one small message (a header, nfgenmsg and two names, far below the largest
// netlink message the batch guarantees room for) into `buf`.
unsafe impl NlMsg for FlushSet {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        // SAFETY: `buf` has room for the message (see the impl comment); the header fields
        // are rewritten in place within its first NLMSG_HDRLEN bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.bytes.as_ptr(), buf as *mut u8, self.bytes.len());
            let nlh = buf as *mut libc::nlmsghdr;
            (*nlh).nlmsg_type = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | libc::NFT_MSG_DELSETELEM as u16;
            (*nlh).nlmsg_flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
            (*nlh).nlmsg_seq = seq;
        }
    }
}

/// Registers a netlink socket with the current runtime's reactor, for readiness (the
/// daemon's change notifications and collectors wait on sockets this way). Tokio asks an
/// `unsafe` promise for that, so it lives here with the rest.
pub fn async_socket(
    sock: netlink_sys::Socket,
) -> std::io::Result<tokio::io::unix::AsyncFd<netlink_sys::Socket>> {
    // SAFETY: a netlink_sys::Socket owns its file descriptor: it is opened when the Socket
    // is made and closed only when the Socket is dropped, which happens only with the
    // AsyncFd (or after `into_inner`); `as_raw_fd` always returns that same descriptor.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

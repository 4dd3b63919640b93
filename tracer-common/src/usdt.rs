//! USDT probe arguments: where a probe site keeps each argument, decoded in userspace from the
//! `.note.stapsdt` spec (`8@%rbx`, `-4@-20(%rbp)`, `4@$5`) and read by the kernel program.

/// How to find one argument at a probe site.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arg {
    /// One of [`Arg::NONE`], [`Arg::REGISTER`], [`Arg::MEMORY`], [`Arg::CONSTANT`].
    pub location: u32,
    /// Byte offset of the register in `struct pt_regs`.
    pub register: u32,
    /// The constant, or the displacement added to the register for [`Arg::MEMORY`].
    pub value: i64,
    /// Size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    pub signed: u8,
    pub _pad: [u8; 6],
}

impl Arg {
    /// The site has no such argument.
    pub const NONE: u32 = 0;
    /// `%reg`: the value is in a register.
    pub const REGISTER: u32 = 1;
    /// `disp(%reg)`: the value is in memory at register + displacement.
    pub const MEMORY: u32 = 2;
    /// `$imm`: the value is a constant.
    pub const CONSTANT: u32 = 3;

    /// Truncates and extends a raw 8-byte read to the argument's size and signedness.
    #[inline(always)]
    pub fn fit(&self, raw: u64) -> u64 {
        let shift = 64 - 8 * (self.size.clamp(1, 8) as u32);
        if self.signed != 0 {
            (((raw << shift) as i64) >> shift) as u64
        } else {
            (raw << shift) >> shift
        }
    }
}

plain_old_data!(Arg);

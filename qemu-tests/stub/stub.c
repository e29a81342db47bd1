/*
 * walden's stub guest: a multiboot kernel of a few KiB that QEMU boots
 * directly (`-kernel`, i.e. a guest TOML's `[boot] kernel`), for the
 * image scenarios where the guest OS does not matter (ordering, crash
 * loops, config apply, shutdown). Under TCG inside TCG a Linux guest needs
 * minutes to its marker; this one prints it at once.
 *
 * On COM1 it prints, as the tiny Linux guest's /init does
 * (qemu-tests/src/guest_assets.rs):
 *   GUEST-PCI <name> <bus>:<dev>.<fn> <vendor>:<device>   (each PCI function)
 *   GUEST-MODULE <name> size=<bytes> head=<16 bytes>     (each boot module:
 *                                       a guest's `[boot] initrd`)
 *   GUEST-DISK <name> <dev> size=<sectors> ro=0|1 head=<16 bytes>
 *                                       (walden.disks: virtio.c, each disk)
 *   GUEST-NIC <name> <ifname> mac=<mac> driver=<driver>   (e1000.c, each NIC)
 *   GUEST-UP <name> after 0 s, kernel walden-stub, mem <KiB> kB, cpus <N>
 *   GUEST-DOWN <name> power button, powering off     (then powers off)
 *   GUEST-IGNORED <name> power button, ignored       (walden.ignore_button)
 *   GUEST-ECHO <name>: <line>                        (each line typed on COM1)
 *   GUEST-PING <name> <peer> ok|failed (via <ifname> <ip>)
 *                         (walden.ip=A.B.C.D/N walden.ping=PEER: e1000.c)
 * QEMU boots it as a multiboot kernel; GRUB (`multiboot2`, e.g. from a
 * UEFI guest's disk) as a multiboot2 one. Its command line says
 * `walden.guest=NAME` and optionally `walden.ignore_button`. `mem` is the
 * RAM the firmware reports (multiboot: mem_lower + mem_upper; multiboot2:
 * the available entries of its memory map), `cpus` the enabled CPUs of the
 * ACPI MADT: the machine as the guest's firmware describes it to an OS.
 *
 * The ACPI power button is read from the PM1a event block and the machine
 * powered off through the PM1a control block (S5), both found in the FADT
 * the firmware publishes (SeaBIOS and QEMU's tables: any PC or q35). It
 * idles with `hlt`, woken 20 times a second by the PIT, so an idle stub
 * costs its host nearly nothing.
 *
 * Built by the harness with Debian's gcc and ld (qemu-tests/src/stub.rs):
 *   gcc -m32 -ffreestanding -nostdlib -T stub.ld ... stub.c -o stub.elf
 */
#include "stub.h"

/* What a multiboot loader leaves in EAX (the header below asks for the
 * memory info: flags 0x3, modules page aligned too). */
#define MB_BOOTED 0x2BADB002u
/* The same from a multiboot2 loader (GRUB's `multiboot2`, e.g. under UEFI
 * firmware): EBX then points at a list of tags. */
#define MB2_BOOTED 0x36d76289u

__asm__(
    ".section .multiboot, \"a\"\n"
    ".align 4\n"
    ".long 0x1BADB002\n"
    ".long 0x00000003\n"
    ".long -(0x1BADB002 + 0x00000003)\n"
    /* The multiboot2 header: i386, no requests (GRUB passes the command
     * line, the memory and the ACPI RSDP anyway), the end tag. */
    ".align 8\n"
    "mb2_header:\n"
    ".long 0xE85250D6\n"
    ".long 0\n"
    ".long mb2_end - mb2_header\n"
    ".long -(0xE85250D6 + (mb2_end - mb2_header))\n"
    ".short 0, 0\n"
    ".long 8\n"
    "mb2_end:\n"
    ".text\n"
    ".globl _start\n"
    "_start:\n"
    "  cli\n"
    "  mov $stub_stack + 16384, %esp\n"
    "  push %ebx\n" /* multiboot information */
    "  push %eax\n" /* multiboot magic */
    "  call stub_main\n"
    "1: cli\n"
    "  hlt\n"
    "  jmp 1b\n"
    /* Every interrupt: end of interrupt to both PICs, return. */
    ".globl irq_entry\n"
    "irq_entry:\n"
    "  push %eax\n"
    "  incl ticks\n"
    "  movl $0, 0xfee000b0\n" /* the local APIC's EOI: harmless if idle */
    "  mov $0x20, %al\n"
    "  out %al, $0xa0\n"
    "  out %al, $0x20\n"
    "  pop %eax\n"
    "  iret\n"
    /* Load the GDT, reload CS (far jump) and the data segments. */
    ".globl load_gdt\n"
    "load_gdt:\n"
    "  mov 4(%esp), %eax\n"
    "  lgdt (%eax)\n"
    "  ljmp $0x08, $2f\n"
    "2: mov $0x10, %ax\n"
    "  mov %ax, %ds\n"
    "  mov %ax, %es\n"
    "  mov %ax, %fs\n"
    "  mov %ax, %gs\n"
    "  mov %ax, %ss\n"
    "  ret\n");

extern void irq_entry(void);
extern void load_gdt(const void *gdtr);

uint8_t stub_stack[16384] __attribute__((aligned(16), used));

struct multiboot_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
};

/* The modules the loader passed (QEMU: `-initrd`, i.e. a guest's `[boot]
 * initrd`; GRUB: `module2`): start and end addresses. */
#define MAX_MODULES 4
static uint32_t modules[MAX_MODULES][2];
static uint32_t module_count;

static void add_module(uint32_t start, uint32_t end)
{
    if (module_count < MAX_MODULES && end >= start) {
        modules[module_count][0] = start;
        modules[module_count][1] = end;
        module_count++;
    }
}

/* COM1 */
#define COM1 0x3f8
void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20)) {
    }
    outb(COM1, (uint8_t)c);
}
void puts(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            putc('\r');
        putc(*s);
    }
}
void putu(uint32_t v)
{
    char b[11];
    int i = 10;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i);
    puts(b + i);
}

void put_head(const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n && i < 16; i++) {
        char c = (char)p[i];
        int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        putc(plain ? c : '.');
    }
}

/* `v` in decimal, 64 bits wide (no libgcc: `divl` by 10 in two steps). */
void putu64(uint64_t v)
{
    char b[21];
    int i = 20;
    b[i] = 0;
    do {
        uint32_t hi = (uint32_t)(v >> 32), lo = (uint32_t)v, r = hi % 10;
        hi /= 10;
        __asm__("divl %4" : "=a"(lo), "=d"(r) : "a"(lo), "d"(r), "r"(10u));
        v = (uint64_t)hi << 32 | lo;
        b[--i] = (char)('0' + r);
    } while (v && i);
    puts(b + i);
}

void mark(const char *marker, const char *name)
{
    puts(marker);
    puts(" ");
    puts(name);
    puts(" ");
}

/* What gcc may call for struct copies and zeroing, even freestanding. */
void *memset(void *d, int c, uint32_t n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, uint32_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

volatile uint32_t ticks;

/* `v` as `digits` lower-case hex digits. */
void puthex(uint32_t v, int digits)
{
    char b[9];
    b[digits] = 0;
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        b[i] = "0123456789abcdef"[v & 0xf];
    puts(b);
}

static int starts_with(const char *s, const char *p)
{
    for (; *p; s++, p++)
        if (*s != *p)
            return 0;
    return 1;
}

/* The value of `key` (e.g. "walden.guest=") on the command line into out. */
int arg(const char *cmdline, const char *key, char *out, int size)
{
    const char *s = cmdline;
    while (*s) {
        while (*s == ' ')
            s++;
        if (starts_with(s, key)) {
            int n = 0;
            const char *k = key;
            while (*k)
                k++, s++;
            while (*s && *s != ' ' && n < size - 1)
                out[n++] = *s++;
            out[n] = 0;
            return 1;
        }
        while (*s && *s != ' ')
            s++;
    }
    return 0;
}

/* ACPI: the FADT's power management blocks. */
struct pm {
    uint16_t evt, cnt, smi_cmd;
    uint8_t acpi_enable;
};

/* Memory at a physical address (identity mapped), hidden from the
 * compiler's bounds checks. */
static inline const uint8_t *phys(uintptr_t a)
{
    __asm__("" : "+r"(a));
    return (const uint8_t *)a;
}

static int sig(const uint8_t *p, const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (p[i] != (uint8_t)s[i])
            return 0;
    return 1;
}

/* The RSDP a multiboot2 loader copied into its tags (UEFI firmware keeps
 * the tables where no BIOS-area scan finds them), or 0. */
static const uint8_t *mb2_rsdp;

static const uint8_t *find_rsdp(void)
{
    if (mb2_rsdp)
        return mb2_rsdp;
    uintptr_t ebda = (uintptr_t)(*(const uint16_t *)phys(0x40e)) << 4;
    for (uintptr_t a = ebda; ebda && a < ebda + 1024; a += 16)
        if (sig(phys(a), "RSD PTR ", 8))
            return phys(a);
    for (uintptr_t a = 0xe0000; a < 0x100000; a += 16)
        if (sig(phys(a), "RSD PTR ", 8))
            return phys(a);
    return 0;
}

/* The ACPI table with signature `want` (RSDT), or 0. */
static const uint8_t *find_table(const char *want)
{
    const uint8_t *rsdp = find_rsdp();
    if (!rsdp)
        return 0;
    /* The RSDT (32-bit entries), or an ACPI 2.0 XSDT (64-bit entries,
     * the tables below 4 GiB as firmware places them). */
    uint32_t addr = *(const uint32_t *)(rsdp + 16), step = 4;
    if (!addr && rsdp[15] >= 2) {
        addr = *(const uint32_t *)(rsdp + 24);
        step = 8;
    }
    if (!addr)
        return 0;
    const uint8_t *rsdt = phys(addr);
    uint32_t len = *(const uint32_t *)(rsdt + 4);
    for (uint32_t off = 36; off + step <= len; off += step) {
        const uint8_t *t = phys(*(const uint32_t *)(rsdt + off));
        if (sig(t, want, 4))
            return t;
    }
    return 0;
}

static int find_pm(struct pm *pm)
{
    const uint8_t *t = find_table("FACP");
    if (!t)
        return 0;
    pm->smi_cmd = (uint16_t)*(const uint32_t *)(t + 48);
    pm->acpi_enable = t[52];
    pm->evt = (uint16_t)*(const uint32_t *)(t + 56);
    pm->cnt = (uint16_t)*(const uint32_t *)(t + 64);
    return pm->evt && pm->cnt;
}

/* The CPUs the firmware lists as enabled in the MADT (local APIC and
 * x2APIC entries), as an OS counts them; 1 without a MADT. */
static uint32_t count_cpus(void)
{
    const uint8_t *t = find_table("APIC");
    if (!t)
        return 1;
    uint32_t len = *(const uint32_t *)(t + 4), n = 0;
    for (uint32_t off = 44; off + 2 <= len && t[off + 1] >= 2; off += t[off + 1]) {
        if (t[off] == 0 && (*(const uint32_t *)(t + off + 4) & 1))
            n++;
        else if (t[off] == 9 && (*(const uint32_t *)(t + off + 8) & 1))
            n++;
    }
    return n ? n : 1;
}

void pci_each(void (*found)(uint32_t bdf, uint32_t id, void *ctx), void *ctx)
{
    for (uint32_t bus = 0; bus < 256; bus++)
        for (uint32_t dev = 0; dev < 32; dev++)
            for (uint32_t fn = 0; fn < 8; fn++) {
                uint32_t bdf = bus << 8 | dev << 3 | fn;
                uint32_t id = pci_read32(bdf, 0);
                if ((id & 0xffff) == 0xffff) {
                    if (fn == 0)
                        break;
                    continue;
                }
                found(bdf, id, ctx);
                if (fn == 0 && !(pci_read32(bdf, 0x0c) & 0x00800000u))
                    break; /* header type: not multi-function */
            }
}

/* `GUEST-PCI <name> <bus>:<dev>.<fn> <vendor>:<device>` for one function:
 * what the guest's firmware and hardware show an OS, passed-through
 * devices included. */
static void print_pci(uint32_t bdf, uint32_t id, void *name)
{
    mark("GUEST-PCI", name);
    puthex(bdf >> 8, 2);
    puts(":");
    puthex(bdf >> 3 & 0x1f, 2);
    puts(".");
    puthex(bdf & 7, 1);
    puts(" ");
    puthex(id & 0xffff, 4);
    puts(":");
    puthex(id >> 16, 4);
    puts("\n");
}

/* What the loader says: the command line and the RAM in KiB (mem_lower +
 * mem_upper), from a multiboot information block or multiboot2 tags. */
static void boot_info(uint32_t magic, uintptr_t info, const char **cmdline, uint32_t *mem)
{
    if (magic == MB_BOOTED) {
        const struct multiboot_info *mbi = (const struct multiboot_info *)info;
        if (mbi->flags & 4)
            *cmdline = (const char *)(uintptr_t)mbi->cmdline;
        if (mbi->flags & 1)
            *mem = mbi->mem_lower + mbi->mem_upper;
        if (mbi->flags & 8)
            for (uint32_t i = 0; i < mbi->mods_count; i++) {
                const uint32_t *m = (const uint32_t *)phys(mbi->mods_addr + 16 * i);
                add_module(m[0], m[1]);
            }
        return;
    }
    if (magic != MB2_BOOTED)
        return;
    uint32_t total = *(const uint32_t *)phys(info), mmap_kib = 0;
    for (uintptr_t at = info + 8; at + 8 <= info + total;) {
        uint32_t type = *(const uint32_t *)phys(at), size = *(const uint32_t *)phys(at + 4);
        if (type == 0 || size < 8)
            break;
        if (type == 1)
            *cmdline = (const char *)phys(at + 8);
        else if (type == 4 && !mmap_kib)
            *mem = *(const uint32_t *)phys(at + 8) + *(const uint32_t *)phys(at + 12);
        else if (type == 6) {
            /* The memory map: under UEFI the memory above 1 MiB is not in
             * one piece, so the RAM is the sum of its available entries. */
            uint32_t entry = *(const uint32_t *)phys(at + 8);
            for (uintptr_t e = at + 16; entry && e + 24 <= at + size; e += entry)
                if (*(const uint32_t *)phys(e + 16) == 1)
                    mmap_kib += (uint32_t)(*(const uint64_t *)phys(e + 8) >> 10);
            *mem = mmap_kib;
        }
        else if (type == 3)
            add_module(*(const uint32_t *)phys(at + 8), *(const uint32_t *)phys(at + 12));
        else if ((type == 14 || type == 15) && !mb2_rsdp)
            mb2_rsdp = phys(at + 8);
        at += (size + 7) & ~7u;
    }
}

/* Interrupts: a flat GDT, an IDT whose every entry ends the interrupt, the
 * PICs remapped to vectors 0x20-0x2f with only the timer unmasked, and the
 * PIT at 20 Hz. */
static uint64_t gdt[3] = {0, 0x00cf9a000000ffffull, 0x00cf92000000ffffull};
static uint64_t idt[256];
static struct __attribute__((packed)) {
    uint16_t limit;
    uint32_t base;
} gdtr, idtr;

static void setup_interrupts(void)
{
    gdtr.limit = sizeof(gdt) - 1;
    gdtr.base = (uint32_t)(uintptr_t)gdt;
    load_gdt(&gdtr);
    uint32_t h = (uint32_t)(uintptr_t)irq_entry;
    for (int i = 0; i < 256; i++)
        idt[i] = (uint64_t)(h & 0xffff) | ((uint64_t)0x08 << 16) | ((uint64_t)0x8e00 << 32) |
                 ((uint64_t)(h >> 16) << 48);
    idtr.limit = sizeof(idt) - 1;
    idtr.base = (uint32_t)(uintptr_t)idt;
    __asm__ volatile("lidt %0" ::"m"(idtr));
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    outb(0x21, 0x20);
    outb(0xa1, 0x28);
    outb(0x21, 0x04);
    outb(0xa1, 0x02);
    outb(0x21, 0x01);
    outb(0xa1, 0x01);
    outb(0x21, 0xfe);
    outb(0xa1, 0xff);
    /* Firmware may leave the local APIC's timer running (OVMF): mask it. */
    *(volatile uint32_t *)0xfee00320 |= 1u << 16;
    uint16_t div = 1193182 / 20;
    outb(0x43, 0x34);
    outb(0x40, (uint8_t)div);
    outb(0x40, (uint8_t)(div >> 8));
}

#define PWRBTN (1u << 8)
#define SLP_EN (1u << 13)
#define SCI_EN 1u

void stub_main(uint32_t magic, uintptr_t info)
{
    static char name[64] = "guest";
    static char ignore[8], disks[8], ip[24], peer[16];
    static char line[128];
    const char *cmdline = "";
    uint32_t mem = 0;
    boot_info(magic, info, &cmdline, &mem);
    arg(cmdline, "walden.guest=", name, sizeof(name));
    int ignore_button = arg(cmdline, "walden.ignore_button", ignore, sizeof(ignore));

    outb(COM1 + 1, 0x00); /* no UART interrupts: polled */
    outb(COM1 + 3, 0x03); /* 8N1 */

    struct pm pm = {0};
    if (!find_pm(&pm)) {
        puts("GUEST-WARN ");
        puts(name);
        puts(": no ACPI FADT: the power button cannot be seen\n");
    } else {
        if (!(inw(pm.cnt) & SCI_EN) && pm.smi_cmd && pm.acpi_enable)
            outb(pm.smi_cmd, pm.acpi_enable);
        outw(pm.evt, PWRBTN);          /* clear a stale press */
        outw(pm.evt + 2, PWRBTN);      /* PM1_EN: the button sets its status */
    }
    setup_interrupts();

    puts("\n"); /* on lines of their own after the firmware's */
    pci_each(print_pci, name);
    for (uint32_t i = 0; i < module_count; i++) {
        mark("GUEST-MODULE", name);
        puts("size=");
        putu(modules[i][1] - modules[i][0]);
        puts(" head=");
        put_head(phys(modules[i][0]), modules[i][1] - modules[i][0]);
        puts("\n");
    }
    if (arg(cmdline, "walden.disks=", disks, sizeof(disks)))
        list_disks(name);
    list_nics(name);
    puts("GUEST-UP ");
    puts(name);
    puts(" after 0 s, kernel walden-stub, mem ");
    putu(mem);
    puts(" kB, cpus ");
    putu(count_cpus());
    puts("\n");
    if (arg(cmdline, "walden.ip=", ip, sizeof(ip)) && arg(cmdline, "walden.ping=", peer, sizeof(peer)))
        ping_peer(name, ip, peer);

    int n = 0;
    for (;;) {
        if (pm.evt && (inw(pm.evt) & PWRBTN)) {
            outw(pm.evt, PWRBTN);
            if (ignore_button) {
                puts("GUEST-IGNORED ");
                puts(name);
                puts(" power button, ignored\n");
            } else {
                puts("GUEST-DOWN ");
                puts(name);
                puts(" power button, powering off\n");
                outw(pm.cnt, SLP_EN); /* SLP_TYP 0: S5 in QEMU's DSDT */
            }
        }
        while (inb(COM1 + 5) & 1) {
            char c = (char)inb(COM1);
            if (c == '\r' || c == '\n') {
                puts("\n");
                if (n) {
                    line[n] = 0;
                    puts("GUEST-ECHO ");
                    puts(name);
                    puts(": ");
                    puts(line);
                    puts("\n");
                    n = 0;
                }
            } else if (c >= ' ' && c < 127 && n < (int)sizeof(line) - 1) {
                line[n++] = c;
                putc(c);
            }
        }
        __asm__ volatile("sti; hlt; cli");
    }
}

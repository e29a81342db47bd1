/*
 * walden's stub guest: a multiboot kernel of a few KiB that QEMU boots
 * directly (`-kernel`, i.e. a guest TOML's `[boot] kernel`), for the
 * image scenarios where the guest OS does not matter (ordering, crash
 * loops, config apply, shutdown). Under TCG inside TCG a Linux guest needs
 * minutes to its marker; this one prints it at once.
 *
 * On COM1 it prints, as the tiny Linux guest's /init does
 * (qemu-tests/src/guest_assets.rs):
 *   GUEST-UP <name> after 0 s, kernel walden-stub, mem <KiB> kB, cpus <N>
 *   GUEST-DOWN <name> power button, powering off     (then powers off)
 *   GUEST-IGNORED <name> power button, ignored       (walden.ignore_button)
 *   GUEST-ECHO <name>: <line>                        (each line typed on COM1)
 * Its command line (multiboot) says `walden.guest=NAME` and optionally
 * `walden.ignore_button`. `mem` is the RAM the firmware reports (multiboot
 * mem_lower + mem_upper), `cpus` the enabled CPUs of the ACPI MADT: the
 * machine as the guest's firmware describes it to an OS.
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
#include <stdint.h>

/* What a multiboot loader leaves in EAX (the header below asks for the
 * memory info: flags 0x3, modules page aligned too). */
#define MB_BOOTED 0x2BADB002u

__asm__(
    ".section .multiboot, \"a\"\n"
    ".align 4\n"
    ".long 0x1BADB002\n"
    ".long 0x00000003\n"
    ".long -(0x1BADB002 + 0x00000003)\n"
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
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* COM1 */
#define COM1 0x3f8
static void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20)) {
    }
    outb(COM1, (uint8_t)c);
}
static void puts(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            putc('\r');
        putc(*s);
    }
}
static void putu(uint32_t v)
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

static int starts_with(const char *s, const char *p)
{
    for (; *p; s++, p++)
        if (*s != *p)
            return 0;
    return 1;
}

/* The value of `key` (e.g. "walden.guest=") on the command line into out. */
static int arg(const char *cmdline, const char *key, char *out, int size)
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

static const uint8_t *find_rsdp(void)
{
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
    const uint8_t *rsdt = phys(*(const uint32_t *)(rsdp + 16));
    uint32_t len = *(const uint32_t *)(rsdt + 4);
    for (uint32_t off = 36; off + 4 <= len; off += 4) {
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
    uint16_t div = 1193182 / 20;
    outb(0x43, 0x34);
    outb(0x40, (uint8_t)div);
    outb(0x40, (uint8_t)(div >> 8));
}

#define PWRBTN (1u << 8)
#define SLP_EN (1u << 13)
#define SCI_EN 1u

void stub_main(uint32_t magic, const struct multiboot_info *mbi)
{
    static char name[64] = "guest";
    static char ignore[8];
    static char line[128];
    const char *cmdline = "";
    if (magic == MB_BOOTED && (mbi->flags & 4))
        cmdline = (const char *)(uintptr_t)mbi->cmdline;
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

    puts("\nGUEST-UP "); /* on a line of its own after the firmware's */
    puts(name);
    puts(" after 0 s, kernel walden-stub, mem ");
    putu((magic == MB_BOOTED && (mbi->flags & 1)) ? mbi->mem_lower + mbi->mem_upper : 0);
    puts(" kB, cpus ");
    putu(count_cpus());
    puts("\n");

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

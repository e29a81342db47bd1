/*
 * What the stub guest's parts share (stub.c: boot, markers, power button;
 * virtio.c: disks; e1000.c: a NIC and ping): port I/O, PCI configuration
 * space, the serial port and the timer's tick count.
 */
#ifndef WALDEN_STUB_H
#define WALDEN_STUB_H

#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
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
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* Keep the compiler from moving memory accesses across this point (the
 * devices read and write the rings in memory). */
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* PCI configuration mechanism 1; `bdf` is bus << 8 | device << 3 | fn. */
static inline void pci_at(uint32_t bdf, uint32_t off) { outl(0xcf8, 0x80000000u | bdf << 8 | (off & 0xfc)); }
static inline uint32_t pci_read32(uint32_t bdf, uint32_t off)
{
    pci_at(bdf, off);
    return inl(0xcfc);
}
static inline uint8_t pci_read8(uint32_t bdf, uint32_t off)
{
    pci_at(bdf, off);
    return inb((uint16_t)(0xcfc + (off & 3)));
}
static inline void pci_write32(uint32_t bdf, uint32_t off, uint32_t v)
{
    pci_at(bdf, off);
    outl(0xcfc, v);
}
static inline void pci_write8(uint32_t bdf, uint32_t off, uint8_t v)
{
    pci_at(bdf, off);
    outb((uint16_t)(0xcfc + (off & 3)), v);
}
/* Let the function decode its memory BARs and master the bus (DMA). */
static inline void pci_enable(uint32_t bdf)
{
    pci_write32(bdf, 4, (pci_read32(bdf, 4) & 0xffff) | 0x6);
}

/* Calls `found(bdf, vendor_device)` for every PCI function, in bus order. */
void pci_each(void (*found)(uint32_t bdf, uint32_t id, void *ctx), void *ctx);

/* COM1 */
void putc(char c);
void puts(const char *s);
void putu(uint32_t v);
void putu64(uint64_t v);
void puthex(uint32_t v, int digits);
/* The first (up to) 16 of `n` bytes at `p`, each other than
 * [A-Za-z0-9_-] as '.': the `head=` of GUEST-DISK and GUEST-MODULE. */
void put_head(const uint8_t *p, uint32_t n);
/* A marker line's start: "<marker> <name> ". */
void mark(const char *marker, const char *name);

/* The value of `key` (e.g. "walden.guest=") on the command line. */
int arg(const char *cmdline, const char *key, char *out, int size);

/* Timer interrupts since boot: 20 a second. */
extern volatile uint32_t ticks;
#define TICKS_PER_S 20
/* Wait for the next interrupt (the timer's at the latest). */
static inline void idle(void) { __asm__ volatile("sti; hlt; cli"); }

void *memset(void *d, int c, uint32_t n);
void *memcpy(void *d, const void *s, uint32_t n);

/* virtio.c: a GUEST-DISK line for each virtio-blk disk and each disk on a
 * virtio-scsi controller. */
void list_disks(const char *name);
/* e1000.c: a GUEST-NIC line for each NIC; with `ip` ("A.B.C.D/N") and
 * `peer`, ping the peer through the first e1000 and say GUEST-PING. */
void list_nics(const char *name);
void ping_peer(const char *name, const char *ip, const char *peer);

#endif

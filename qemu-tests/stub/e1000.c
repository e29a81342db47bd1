/*
 * The stub guest's network: QEMU's e1000 (Intel 82540EM, 8086:100e),
 * polled, enough to answer ARP and to ping one peer, as the tiny Linux
 * guest did with `walden.ip=` and `walden.ping=`:
 *   GUEST-NIC <name> eth<N> mac=<mac> driver=e1000     (each e1000)
 *   GUEST-PING <name> <peer> ok|failed (via eth0 <ip>)
 * The ping goes through the first e1000: an ARP request each second until
 * the peer answers, then an ICMP echo each second until one comes back,
 * for up to 60 s (a bridge port may join its VLAN only after the guest
 * started). Other NIC models are not driven (their PCI IDs are in the
 * GUEST-PCI lines).
 */
#include "stub.h"

#define E1000_ID 0x100e8086u

#define CTRL 0x0000
#define IMC 0x00d8
#define RCTL 0x0100
#define TCTL 0x0400
#define RDBAL 0x2800
#define RDBAH 0x2804
#define RDLEN 0x2808
#define RDH 0x2810
#define RDT 0x2818
#define TDBAL 0x3800
#define TDBAH 0x3804
#define TDLEN 0x3808
#define TDH 0x3810
#define TDT 0x3818
#define RAL 0x5400
#define RAH 0x5404

#define CTRL_SLU (1u << 6)
#define CTRL_RST (1u << 26)
#define RCTL_EN (1u << 1)
#define RCTL_BAM (1u << 15)
#define RCTL_SECRC (1u << 26)
#define TCTL_EN (1u << 1)
#define TCTL_PSP (1u << 3)

static volatile uint32_t *regs;
static inline uint32_t reg(uint32_t r) { return regs[r / 4]; }
static inline void set(uint32_t r, uint32_t v) { regs[r / 4] = v; }

#define RING 8
struct rx_desc {
    uint64_t addr;
    uint16_t len, csum;
    uint8_t status, errors;
    uint16_t special;
};
struct tx_desc {
    uint64_t addr;
    uint16_t len;
    uint8_t cso, cmd, status, css;
    uint16_t special;
};
static struct rx_desc rx[RING] __attribute__((aligned(128)));
static struct tx_desc tx[RING] __attribute__((aligned(128)));
static uint8_t rx_buf[RING][2048] __attribute__((aligned(16)));
static uint8_t tx_buf[1536] __attribute__((aligned(16)));
static uint32_t rx_next, tx_next;
static uint8_t mac[6];

static void read_mac(void)
{
    uint32_t lo = reg(RAL), hi = reg(RAH);
    for (int i = 0; i < 4; i++)
        mac[i] = (uint8_t)(lo >> (8 * i));
    mac[4] = (uint8_t)hi;
    mac[5] = (uint8_t)(hi >> 8);
}

static int map(uint32_t bdf)
{
    uint32_t bar = pci_read32(bdf, 0x10);
    if (bar & 1 || !(bar & ~0xfu))
        return 0; /* an I/O BAR, or unassigned */
    pci_enable(bdf);
    regs = (volatile uint32_t *)(uintptr_t)(bar & ~0xfu);
    return 1;
}

struct nics {
    const char *guest;
    int n;
    uint32_t first; /* bdf + 1 of the first e1000, 0: none */
};

static void nic_of(uint32_t bdf, uint32_t id, void *ctx)
{
    struct nics *nics = ctx;
    if (id != E1000_ID || !map(bdf))
        return;
    read_mac();
    mark("GUEST-NIC", nics->guest);
    puts("eth");
    putu((uint32_t)nics->n++);
    puts(" mac=");
    for (int i = 0; i < 6; i++) {
        puthex(mac[i], 2);
        if (i < 5)
            puts(":");
    }
    puts(" driver=e1000\n");
}

static void first_e1000(uint32_t bdf, uint32_t id, void *ctx)
{
    struct nics *nics = ctx;
    if (id == E1000_ID && !nics->first)
        nics->first = bdf + 1;
}

void list_nics(const char *name)
{
    struct nics nics = {name, 0, 0};
    pci_each(nic_of, &nics);
}

static void start(void)
{
    set(IMC, ~0u);
    set(CTRL, reg(CTRL) | CTRL_RST);
    for (int i = 0; i < 100000 && (reg(CTRL) & CTRL_RST); i++) {
    }
    set(IMC, ~0u); /* polled: no interrupts */
    read_mac();
    set(CTRL, reg(CTRL) | CTRL_SLU);
    memset(rx, 0, sizeof(rx));
    memset(tx, 0, sizeof(tx));
    for (int i = 0; i < RING; i++)
        rx[i].addr = (uint32_t)(uintptr_t)rx_buf[i];
    set(RDBAL, (uint32_t)(uintptr_t)rx);
    set(RDBAH, 0);
    set(RDLEN, sizeof(rx));
    set(RDH, 0);
    set(RDT, RING - 1);
    set(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
    set(TDBAL, (uint32_t)(uintptr_t)tx);
    set(TDBAH, 0);
    set(TDLEN, sizeof(tx));
    set(TDH, 0);
    set(TDT, 0);
    set(TCTL, TCTL_EN | TCTL_PSP | 0x0fu << 4 | 0x40u << 12);
    rx_next = tx_next = 0;
}

static void send(uint32_t len)
{
    if (len < 60) { /* the shortest Ethernet frame, without its FCS */
        memset(tx_buf + len, 0, 60 - len);
        len = 60;
    }
    struct tx_desc *t = &tx[tx_next];
    memset(t, 0, sizeof(*t));
    t->addr = (uint32_t)(uintptr_t)tx_buf;
    t->len = (uint16_t)len;
    t->cmd = 0x0b; /* end of packet, insert FCS, report status */
    tx_next = (tx_next + 1) % RING;
    barrier();
    set(TDT, tx_next);
    for (int i = 0; i < 100000 && !(*(volatile uint8_t *)&t->status & 1); i++) {
    }
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static int same(const uint8_t *a, const uint8_t *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static uint16_t checksum(const uint8_t *p, uint32_t n)
{
    uint32_t sum = 0;
    for (uint32_t i = 0; i + 1 < n; i += 2)
        sum += be16(p + i);
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* "A.B.C.D" into 4 bytes; the characters read, 0 when malformed. */
static int parse_ip(const char *s, uint8_t ip[4])
{
    const char *start = s;
    for (int i = 0; i < 4; i++) {
        uint32_t v = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 3)
            v = v * 10 + (uint32_t)(*s++ - '0'), digits++;
        if (!digits || v > 255 || (i < 3 && *s++ != '.'))
            return 0;
        ip[i] = (uint8_t)v;
    }
    return (int)(s - start);
}

static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static void ethernet(const uint8_t *dst, uint16_t type)
{
    memcpy(tx_buf, dst, 6);
    memcpy(tx_buf + 6, mac, 6);
    put16(tx_buf + 12, type);
}

static void arp(uint16_t op, const uint8_t *dst_mac, const uint8_t *self, const uint8_t *target)
{
    ethernet(dst_mac, 0x0806);
    uint8_t *a = tx_buf + 14;
    put16(a, 1);
    put16(a + 2, 0x0800);
    a[4] = 6;
    a[5] = 4;
    put16(a + 6, op);
    memcpy(a + 8, mac, 6);
    memcpy(a + 14, self, 4);
    memcpy(a + 18, op == 1 ? broadcast : dst_mac, 6);
    if (op == 1)
        memset(a + 18, 0, 6);
    memcpy(a + 24, target, 4);
    send(14 + 28);
}

static void echo(const uint8_t *peer_mac, const uint8_t *self, const uint8_t *peer, uint16_t seq)
{
    ethernet(peer_mac, 0x0800);
    uint8_t *ip = tx_buf + 14, *icmp = ip + 20;
    memset(ip, 0, 20 + 8 + 32);
    ip[0] = 0x45;
    put16(ip + 2, 20 + 8 + 32);
    ip[8] = 64;
    ip[9] = 1; /* ICMP */
    memcpy(ip + 12, self, 4);
    memcpy(ip + 16, peer, 4);
    put16(ip + 10, checksum(ip, 20));
    icmp[0] = 8; /* echo request */
    put16(icmp + 4, 0x5741); /* identifier "WA" */
    put16(icmp + 6, seq);
    for (int i = 0; i < 32; i++)
        icmp[8 + i] = (uint8_t)('a' + i % 26);
    put16(icmp + 2, checksum(icmp, 8 + 32));
    send(14 + 20 + 8 + 32);
}

/* The next received frame, or 0; `release` gives its buffer back. */
static uint8_t *receive(uint32_t *len)
{
    struct rx_desc *r = &rx[rx_next];
    if (!(*(volatile uint8_t *)&r->status & 1))
        return 0;
    barrier();
    *len = r->len;
    return rx_buf[rx_next];
}
static void release(void)
{
    rx[rx_next].status = 0;
    barrier();
    set(RDT, rx_next);
    rx_next = (rx_next + 1) % RING;
}

void ping_peer(const char *name, const char *cidr, const char *peer_s)
{
    struct nics nics = {name, 0, 0};
    uint8_t self[4], peer[4], peer_mac[6];
    int known = 0, ok = 0;
    const char *why = "no e1000 NIC";
    pci_each(first_e1000, &nics);
    if (!parse_ip(cidr, self) || !parse_ip(peer_s, peer))
        why = "walden.ip or walden.ping is not an IPv4 address";
    else if (nics.first && map(nics.first - 1)) {
        start();
        why = "no answer in 60 s";
        uint32_t until = ticks + 60 * TICKS_PER_S, next = ticks;
        uint16_t seq = 0;
        while (!ok && (int32_t)(ticks - until) < 0) {
            if ((int32_t)(ticks - next) >= 0) {
                if (known)
                    echo(peer_mac, self, peer, ++seq);
                else
                    arp(1, broadcast, self, peer);
                next = ticks + TICKS_PER_S;
            }
            uint32_t len;
            uint8_t *f;
            while (!ok && (f = receive(&len))) {
                uint16_t type = be16(f + 12);
                const uint8_t *p = f + 14;
                if (type == 0x0806 && len >= 14 + 28 && be16(p + 6) == 1 && same(p + 24, self, 4)) {
                    uint8_t asker_mac[6], asker[4];
                    memcpy(asker_mac, p + 8, 6);
                    memcpy(asker, p + 14, 4);
                    arp(2, asker_mac, self, asker); /* who has our address: us */
                } else if (type == 0x0806 && len >= 14 + 28 && be16(p + 6) == 2 && same(p + 14, peer, 4)) {
                    memcpy(peer_mac, p + 8, 6);
                    if (!known)
                        next = ticks;
                    known = 1;
                } else if (type == 0x0800 && len >= 14 + 28 && p[9] == 1 && same(p + 12, peer, 4) &&
                           same(p + 16, self, 4)) {
                    const uint8_t *icmp = p + (p[0] & 0xf) * 4;
                    ok = icmp[0] == 0 && be16(icmp + 4) == 0x5741;
                }
                release();
            }
            idle();
        }
    }
    mark("GUEST-PING", name);
    puts(peer_s);
    puts(ok ? " ok" : " failed");
    if (!ok) {
        puts(": ");
        puts(why);
    }
    puts(" (via eth0 ");
    puts(cidr);
    puts(")\n");
}

/*
 * The stub guest's disks: virtio-blk (1af4:1042 or 1001) and the disks on
 * a virtio-scsi controller (1af4:1048 or 1004), virtio 1.0 over PCI, each
 * reported as the tiny Linux guest reported it:
 *   GUEST-DISK <name> <dev> size=<512-byte sectors> ro=0|1 head=<16 bytes>
 * virtio-blk disks are named vda, vdb, ... and SCSI disks sda, sdb, ... in
 * PCI order, as Linux names them; `head` is the first 16 bytes read from
 * the disk, each byte other than [A-Za-z0-9_-] shown as '.'.
 *
 * The device's registers are reached through its PCI configuration
 * window (VIRTIO_PCI_CAP_PCI_CFG) rather than through its BAR, which the
 * firmware may place above 4 GiB, out of reach of this 32-bit code
 * without paging. Requests use one split virtqueue of 8 entries and are
 * polled; the device is reset afterwards so the next one can reuse it.
 */
#include "stub.h"

#define VIRTIO_VENDOR 0x1af4
/* Modern device IDs (a PCIe port's), and transitional ones (a device on
 * the root bus or a PCI bridge), which also have the 1.0 capabilities. */
#define VIRTIO_BLK 0x1042
#define VIRTIO_SCSI 0x1048
#define VIRTIO_BLK_OLD 0x1001
#define VIRTIO_SCSI_OLD 0x1004

/* Capability types (virtio 1.0, 4.1.4) */
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_DEVICE 4
#define CAP_PCI_CFG 5

/* Common configuration (4.1.4.3) */
#define C_DFSELECT 0
#define C_DF 4
#define C_GFSELECT 8
#define C_GF 12
#define C_STATUS 20
#define C_QSELECT 22
#define C_QSIZE 24
#define C_QENABLE 28
#define C_QNOTIFYOFF 30
#define C_QDESC 32
#define C_QDRIVER 40
#define C_QDEVICE 48

#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8

#define VIRTIO_BLK_F_RO 5
/* Bit 32: VIRTIO_F_VERSION_1, bit 0 of the second feature word. */
#define VERSION_1_HI 1

struct region {
    uint8_t bar;
    uint32_t off;
};

struct vdev {
    uint32_t bdf;
    uint8_t cfg; /* the PCI configuration window's capability */
    struct region common, notify, device;
    uint32_t notify_mult;
};

/* One access of `len` (1, 2 or 4) bytes to `at` + `off` through the
 * configuration window (4.1.4.7.1). */
static uint32_t vio(struct vdev *d, struct region at, uint32_t off, uint32_t len, uint32_t val, int write)
{
    pci_write8(d->bdf, d->cfg + 4u, at.bar);
    pci_write32(d->bdf, d->cfg + 8u, at.off + off);
    pci_write32(d->bdf, d->cfg + 12u, len);
    if (write) {
        pci_write32(d->bdf, d->cfg + 16u, val);
        return 0;
    }
    uint32_t v = pci_read32(d->bdf, d->cfg + 16u);
    return len == 4 ? v : v & ((1u << (len * 8)) - 1);
}
static uint32_t rd(struct vdev *d, struct region at, uint32_t off, uint32_t len) { return vio(d, at, off, len, 0, 0); }
static void wr(struct vdev *d, struct region at, uint32_t off, uint32_t len, uint32_t v) { vio(d, at, off, len, v, 1); }

/* Find the capabilities; 0 when the function is no modern virtio device. */
static int find_caps(struct vdev *d, uint32_t bdf)
{
    memset(d, 0, sizeof(*d));
    d->bdf = bdf;
    if (!(pci_read32(bdf, 4) & (0x10u << 16)))
        return 0; /* no capability list */
    int have = 0;
    for (uint8_t at = pci_read8(bdf, 0x34) & 0xfc, n = 0; at && n < 48; at = pci_read8(bdf, at + 1u) & 0xfc, n++) {
        if (pci_read8(bdf, at) != 0x09)
            continue; /* not vendor specific */
        uint8_t type = pci_read8(bdf, at + 3u);
        struct region r = {pci_read8(bdf, at + 4u), pci_read32(bdf, at + 8u)};
        if (type == CAP_COMMON) {
            d->common = r;
            have |= 1;
        } else if (type == CAP_NOTIFY) {
            d->notify = r;
            d->notify_mult = pci_read32(bdf, at + 16u);
            have |= 2;
        } else if (type == CAP_DEVICE) {
            d->device = r;
            have |= 4;
        } else if (type == CAP_PCI_CFG) {
            d->cfg = at;
            have |= 8;
        }
    }
    return have == 15;
}

#define QSIZE 8
struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};
#define D_NEXT 1
#define D_WRITE 2

static struct {
    struct desc desc[QSIZE];
    struct {
        uint16_t flags, idx, ring[QSIZE], used_event;
    } avail __attribute__((aligned(2)));
    struct {
        uint16_t flags, idx;
        struct {
            uint32_t id, len;
        } ring[QSIZE];
        uint16_t avail_event;
    } used __attribute__((aligned(4)));
} vq __attribute__((aligned(4096)));
static uint16_t vq_queue, vq_notify_off;

static void reset(struct vdev *d)
{
    wr(d, d->common, C_STATUS, 1, 0);
    for (int i = 0; i < 1000 && rd(d, d->common, C_STATUS, 1); i++) {
    }
}

/* Reset, negotiate VERSION_1 only, set up queue `q`, DRIVER_OK. The
 * device's first 32 feature bits go to `features`. 0 on failure. */
static int start(struct vdev *d, uint16_t q, uint32_t *features)
{
    pci_enable(d->bdf);
    reset(d);
    wr(d, d->common, C_STATUS, 1, S_ACK | S_DRIVER);
    wr(d, d->common, C_DFSELECT, 4, 0);
    *features = rd(d, d->common, C_DF, 4);
    wr(d, d->common, C_DFSELECT, 4, 1);
    if (!(rd(d, d->common, C_DF, 4) & VERSION_1_HI))
        return 0;
    wr(d, d->common, C_GFSELECT, 4, 0);
    wr(d, d->common, C_GF, 4, 0);
    wr(d, d->common, C_GFSELECT, 4, 1);
    wr(d, d->common, C_GF, 4, VERSION_1_HI);
    wr(d, d->common, C_STATUS, 1, S_ACK | S_DRIVER | S_FEATURES_OK);
    if (!(rd(d, d->common, C_STATUS, 1) & S_FEATURES_OK))
        return 0;
    memset(&vq, 0, sizeof(vq));
    wr(d, d->common, C_QSELECT, 2, q);
    if (rd(d, d->common, C_QSIZE, 2) < QSIZE)
        return 0;
    wr(d, d->common, C_QSIZE, 2, QSIZE);
    wr(d, d->common, C_QDESC, 4, (uint32_t)(uintptr_t)vq.desc);
    wr(d, d->common, C_QDESC + 4, 4, 0);
    wr(d, d->common, C_QDRIVER, 4, (uint32_t)(uintptr_t)&vq.avail);
    wr(d, d->common, C_QDRIVER + 4, 4, 0);
    wr(d, d->common, C_QDEVICE, 4, (uint32_t)(uintptr_t)&vq.used);
    wr(d, d->common, C_QDEVICE + 4, 4, 0);
    vq_notify_off = (uint16_t)rd(d, d->common, C_QNOTIFYOFF, 2);
    wr(d, d->common, C_QENABLE, 2, 1);
    vq_queue = q;
    wr(d, d->common, C_STATUS, 1, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    return 1;
}

struct buf {
    void *addr;
    uint32_t len;
    int device_writes;
};

/* One request of `n` buffers; 1 when the device answered within 5 s. */
static int request(struct vdev *d, struct buf *bufs, int n)
{
    for (int i = 0; i < n; i++) {
        vq.desc[i].addr = (uint32_t)(uintptr_t)bufs[i].addr;
        vq.desc[i].len = bufs[i].len;
        vq.desc[i].flags = (uint16_t)((i + 1 < n ? D_NEXT : 0) | (bufs[i].device_writes ? D_WRITE : 0));
        vq.desc[i].next = (uint16_t)(i + 1);
    }
    uint16_t seen = vq.used.idx;
    vq.avail.ring[vq.avail.idx % QSIZE] = 0;
    barrier();
    vq.avail.idx++;
    barrier();
    wr(d, d->notify, vq_notify_off * d->notify_mult, 2, vq_queue);
    uint32_t until = ticks + 5 * TICKS_PER_S;
    while (*(volatile uint16_t *)&vq.used.idx == seen) {
        if ((int32_t)(ticks - until) > 0)
            return 0;
        idle();
    }
    barrier();
    return 1;
}

static void print_disk(const char *name, const char *dev, uint64_t sectors, int ro, const uint8_t *head, int read)
{
    mark("GUEST-DISK", name);
    puts(dev);
    puts(" size=");
    putu64(sectors);
    puts(ro ? " ro=1 head=" : " ro=0 head=");
    put_head(head, read ? 16 : 0);
    puts("\n");
}

static uint8_t sector[4096] __attribute__((aligned(16)));

struct names {
    const char *guest;
    char vd, sd; /* the next letter of each */
};

static void blk_disk(struct names *nm, struct vdev *d)
{
    uint32_t features;
    char dev[4] = {'v', 'd', nm->vd++, 0};
    if (!start(d, 0, &features)) {
        mark("GUEST-WARN", nm->guest);
        puts(dev);
        puts(": the virtio-blk device does not start\n");
        return;
    }
    uint64_t sectors = rd(d, d->device, 0, 4) | (uint64_t)rd(d, d->device, 4, 4) << 32;
    static struct {
        uint32_t type, reserved;
        uint64_t sector;
    } req;
    static uint8_t status;
    req.type = 0; /* VIRTIO_BLK_T_IN */
    req.sector = 0;
    status = 0xff;
    struct buf bufs[3] = {{&req, sizeof(req), 0}, {sector, 512, 1}, {&status, 1, 1}};
    int read = request(d, bufs, 3) && status == 0;
    print_disk(nm->guest, dev, sectors, (features >> VIRTIO_BLK_F_RO) & 1, sector, read);
    reset(d);
}

/* virtio-scsi (5.6): one command to target `t`, LUN 0, on the request
 * queue; the SCSI status (0: GOOD), or -1 when the target is absent or
 * the device did not answer. */
static struct __attribute__((packed)) {
    uint8_t lun[8];
    uint64_t id;
    uint8_t task_attr, prio, crn;
    uint8_t cdb[32];
} scsi_req;
static struct __attribute__((packed)) {
    uint32_t sense_len, resid;
    uint16_t status_qualifier;
    uint8_t status, response;
    uint8_t sense[96];
} scsi_resp;

static int scsi(struct vdev *d, uint8_t t, const uint8_t *cdb, int cdb_len, uint32_t in_len)
{
    memset(&scsi_req, 0, sizeof(scsi_req));
    memset(&scsi_resp, 0, sizeof(scsi_resp));
    scsi_req.lun[0] = 1;
    scsi_req.lun[1] = t;
    scsi_req.lun[2] = 0x40; /* flat addressing, LUN 0 */
    scsi_req.id++;
    memcpy(scsi_req.cdb, cdb, (uint32_t)cdb_len);
    struct buf bufs[3] = {{&scsi_req, sizeof(scsi_req), 0}, {&scsi_resp, sizeof(scsi_resp), 1}, {sector, in_len, 1}};
    if (!request(d, bufs, in_len ? 3 : 2) || scsi_resp.response != 0)
        return -1;
    return scsi_resp.status;
}

static void scsi_disks(struct names *nm, struct vdev *d)
{
    uint32_t features;
    if (!start(d, 2, &features)) { /* queue 2: the first request queue */
        mark("GUEST-WARN", nm->guest);
        puts("the virtio-scsi controller does not start\n");
        return;
    }
    for (uint8_t t = 0; t < 8; t++) {
        static const uint8_t tur[6] = {0x00};
        static const uint8_t capacity[10] = {0x25};
        static const uint8_t sense6[6] = {0x1a, 0, 0x3f, 0, 4, 0};
        static const uint8_t read10[10] = {0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0};
        /* The first command after a reset reports a unit attention. */
        if (scsi(d, t, tur, 6, 0) < 0)
            continue;
        int st = -1;
        for (int i = 0; i < 3 && st != 0; i++)
            st = scsi(d, t, capacity, 10, 8);
        if (st != 0)
            continue;
        uint32_t last = (uint32_t)sector[0] << 24 | sector[1] << 16 | sector[2] << 8 | sector[3];
        uint32_t block = (uint32_t)sector[4] << 24 | sector[5] << 16 | sector[6] << 8 | sector[7];
        uint64_t sectors = ((uint64_t)last + 1) * (block / 512);
        int ro = scsi(d, t, sense6, 6, 4) == 0 && (sector[2] & 0x80); /* WP */
        int read = block <= sizeof(sector) && scsi(d, t, read10, 10, block) == 0;
        char dev[4] = {'s', 'd', nm->sd++, 0};
        print_disk(nm->guest, dev, sectors, ro, sector, read);
    }
    reset(d);
}

static void disk_of(uint32_t bdf, uint32_t id, void *ctx)
{
    struct names *nm = ctx;
    struct vdev d;
    uint32_t dev = id >> 16;
    int blk = dev == VIRTIO_BLK || dev == VIRTIO_BLK_OLD;
    if ((id & 0xffff) != VIRTIO_VENDOR || !(blk || dev == VIRTIO_SCSI || dev == VIRTIO_SCSI_OLD))
        return;
    if (!find_caps(&d, bdf)) {
        mark("GUEST-WARN", nm->guest);
        puthex(bdf >> 8, 2);
        puts(": a virtio device without the virtio 1.0 capabilities\n");
        return;
    }
    if (blk)
        blk_disk(nm, &d);
    else
        scsi_disks(nm, &d);
}

void list_disks(const char *name)
{
    struct names nm = {name, 'a', 'a'};
    pci_each(disk_of, &nm);
}

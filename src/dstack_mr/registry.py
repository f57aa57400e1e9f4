"""Numbers named once: the integer limits of the Rust/UEFI types and every GUID dstack-mr uses.

GUIDs are :class:`uuid.UUID`; firmware stores them in mixed-endian form (``.bytes_le``).
"""

from __future__ import annotations

import uuid

U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

# UEFI 2.10 §3.3 (globally defined variables) and §32.6.1 (image security database).
EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")

# edk2 OvmfPkg: the firmware volume holding the boot-manager apps, and two of those apps
# (UiApp as BootManagerMenuApp, FrontPage as "EFI Firmware Setup"), named in boot options.
OVMF_FV = uuid.UUID("7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1")
UIAPP_FILE = uuid.UUID("eec25bdc-67f2-4d95-b1d5-f81b2039d11d")
FRONTPAGE_FILE = uuid.UUID("462caa21-7614-4503-836e-8ab6f4662331")

# Intel TDX Virtual Firmware design guide §11.1: the OVMF footer's GUIDed table and the
# entry pointing at the TDVF metadata.
OVMF_TABLE_FOOTER = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
TDVF_METADATA_OFFSET = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2")

# SMBIOS reference specification 3.x §5.2: the configuration-table GUIDs of the SMBIOS 3.x
# and 2.x entry points (edk2 logs one of them in the stable202505 RTMR0 handoff-tables event).
SMBIOS3_TABLE = uuid.UUID("f2fd1544-9794-4a2c-992e-e5bbcf20e394")
SMBIOS_TABLE = uuid.UUID("eb9d2d31-2d88-11d3-9a16-0090273fc14d")

# edk2 OvmfPkg/ResetVector (AMD SEV): the footer-table entries giving the SEV hash table's GPA,
# the SEV-ES AP reset block and the SEV metadata's offset; and QEMU target/i386/sev.c: the
# SEV hash table and its cmdline / initrd / kernel entries.
SEV_HASH_TABLE_RV = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
SEV_ES_RESET_BLOCK = uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
SEV_METADATA = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc")
SEV_HASH_TABLE = uuid.UUID("9438d606-4f22-4cc9-b479-a793d411fd21")
SEV_CMDLINE_ENTRY = uuid.UUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
SEV_INITRD_ENTRY = uuid.UUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
SEV_KERNEL_ENTRY = uuid.UUID("4de79437-abd2-427f-b835-d5b172d2045b")

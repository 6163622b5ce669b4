"""mover: incremental CBT backups of VMware vSphere virtual disks.

Glossary
--------
block      A fixed-size, disk-aligned piece of a virtual disk (default 1 MiB). The last block
           of a disk may be shorter.
chunk      One stored block: compressed, named by the SHA-256 of its uncompressed bytes.
index      One per disk per backup: the digest of every block, or "zero" for all-zero blocks.
backup     A committed record plus one index per disk. Every backup is a synthetic full.
changeId   vSphere's CBT position of a disk, ``<epoch>/<sequence>``; the next incremental asks
           for the areas changed since it.
extent     A byte range ``[start, start + length)`` of a disk.
"""

__version__ = "0.1.0"

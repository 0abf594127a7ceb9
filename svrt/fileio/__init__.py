"""Files of svrt: atomic writes, burst and restoration files (FITS or HDF5), single arrays.

Formats are chosen by the file name when writing and by the file's first bytes when reading:

- FITS: ``.fits``, ``.fit``, ``.fts`` (and the same followed by ``.gz``), via :mod:`astropy.io.fits`.
  Checksums (``CHECKSUM``/``DATASUM``) are written and verified on reading.
- HDF5: ``.h5``, ``.hdf5``, ``.hdf``, ``.he5``, via :mod:`h5py`.

Nothing here unpickles anything.

Burst file (the design card's "File contracts"; docs/ARCHITECTURE.md), FITS layout::

    PRIMARY  no data; SVRTFILE = 'burst', NOBJ = K, NFRAMES = L, INSTR0 .. INSTR{K-1}
             (instrument label of each object) and the extra header cards (DATE-OBS, TELESCOP,
             WAVELNTH [Angstrom], simulation settings, ...) less the WCS of the image axes
    FRAMES   float32 [K, L, Y, X]  observed frames (BUNIT = header BUNIT or 'arbitrary'), with the
             celestial WCS of axes 1-2 (CDELT1/CDELT2 [arcsec], ...; WCSAXES = 2)
    TRUTH    float32 [K, Y, X]     object before the atmosphere (simulated bursts only)
    MODES    float32 [L, M, Yg, Xg] true KL coefficients, BUNIT = 'rad' (simulated bursts only)

Optional cards of the primary header that the solver reads (``docs/OBSERVING.md``): phase diversity,
``DIVERSk`` [waves P-V] or ``DIVMMk`` [mm] with ``FNUMk``/``FNUMBER``, and ``DIVOBJk`` (the channel whose
object channel k images; :mod:`svrt.optics.diversity`); camera alignment ``ALIGNk = 'dy,dx,deg,scale'``
(:mod:`svrt.runtime.camera_alignment`). A burst without them is read and solved as before.

HDF5 layout: datasets ``frames``, ``truth``, ``modes`` (attributes ``units`` and ``axes``),
root attributes ``svrt_file``, ``instruments`` (array of str) and one attribute per header key.

Restoration file (SOLARNET-style, partially compliant: ``SOLARNET = 0.5``), FITS layout::

    PRIMARY  no data; EXTNAME = 'PRIMARY', SVRTFILE = 'restoration', NOBJ, NFRAMES, INSTRn and the
             input's cards (DATE-OBS, TELESCOP, EXPTIME, BUNIT, WCS, ..., INPUT = the burst's name)
    OBJECT0 .. OBJECT{K-1}
             float32 [Y, X]   one image per object, each a complete observation HDU that
             ``sunpy.map.Map(path, hdus=k + 1)`` opens: the input's cards and its WCS (axes 1-2),
             SOLARNET, OBS_HDU = 1, DATE-BEG (the input's, else its DATE-OBS), WAVELNTH and
             WAVEUNIT = -10 (Angstrom), BTYPE, BNAME, BUNIT (the input's, else '' = dimensionless,
             the input's relative units), FILENAME, DATE, SVRTINST (instrument label of the object),
             and the provenance PRSTEPn = 'MOMFBD', PRPROCn, PRPVERn, PRMODEn, PRPARAn, PRLIBnA,
             PRVERnA (n follows the input's own PRSTEP cards)
    OBJECT   float32 [K, Y, X]      the objects as one cube (same cards), read by read_restoration
    MODES    float32 [L, M, Yg, Xg] inferred KL coefficients, BUNIT = 'rad'
    MODEL    float32 [K, L, Y, X]   emulated frames of the objects and modes (same cards as OBJECT)
    LOSS     binary table: iteration, total, data, reg_object, reg_modes, ... (one row per iteration)
    CONFIG   binary table KEY, VALUE, COMMENT: every solver setting, the engine's identity and the run's
             figures (:attr:`Restoration.config`), VALUE as JSON text (32, 0.0199, "momfbd", true, null)

Every file also carries the standard cards of :mod:`~svrt.fileio.standard` that its header lacks
(celestial WCS, DATE-BEG/END/AVG, XPOSURE, NSUMEXP, ORIGIN; LEVEL and ATMOS_R0 for restorations), which
read back as part of the header dict. The MODES HDU of a restoration has the WCS of the node grid.

The input's cards are never overwritten by the solver's: those live in CONFIG under their own names
(GRID there is the solver's P, pixels per node, whatever the burst's GRID means). Every HDU has an
EXTNAME. HDF5: datasets ``object``, ``modes``, ``model``, a group ``loss`` holding one 1-D dataset per
column and a group ``config`` with the string datasets ``key``, ``value`` (JSON), ``comment``.
:func:`read_restoration` gives ``header`` = the primary cards plus the CONFIG entries (a CONFIG key
that the primary also has is given as ``SVRT_<KEY>``, see :func:`merge_headers`) and ``config`` as
stored.

Header cards: keys are upper-cased (FITS keys are case-insensitive; HDF5 files get the same
upper-case keys so both formats round-trip to the same dict). Keys longer than 8 characters, or
with characters outside ``A-Z 0-9 - _``, are written as astropy ``HIERARCH`` cards and read back
under their plain name (``HIERARCH LR_OBJECTS`` reads back as ``LR_OBJECTS``). Values must be
``str`` (printable ASCII), ``bool``, ``int`` or finite ``float`` (numpy scalars are accepted);
``None`` values are left out. Structural FITS keys (NAXIS, BITPIX, EXTNAME, CHECKSUM, ...), the
keys this module manages (SVRTFILE, NOBJ, NFRAMES, INSTRn) and COMMENT/HISTORY cards are not part of
the header dict.

The modules: :mod:`~svrt.fileio.atomic` (atomic writes, checks of an output), :mod:`~svrt.fileio.formats`
(FITS or HDF5), :mod:`~svrt.fileio.header` (header cards), :mod:`~svrt.fileio.fitsfile` and
:mod:`~svrt.fileio.hdf5file` (reading and writing each format), :mod:`~svrt.fileio.validation` (the checks
of arrays, labels, LOSS and CONFIG), :mod:`~svrt.fileio.standard` (WCS, times and the other standard
cards), :mod:`~svrt.fileio.burst`, :mod:`~svrt.fileio.restoration` (with
:mod:`~svrt.fileio.solarnet`, its observation cards) and :mod:`~svrt.fileio.arrays` (single arrays).
"""

from __future__ import annotations

from svrt.fileio.arrays import read_array, write_array
from svrt.fileio.atomic import (
    atomic_write,
    check_free_space,
    check_not_input,
    check_output,
    check_writable,
    clean_stale_temps,
)
from svrt.fileio.burst import Burst, read_burst, write_burst
from svrt.fileio.formats import FITS_SUFFIXES, HDF5_SUFFIXES, file_format
from svrt.fileio.header import FILE_KEYS, merge_headers, register_header_comments
from svrt.fileio.restoration import Restoration, read_restoration, restoration_nbytes, write_restoration
from svrt.fileio.validation import LOSS_KEYS

__all__ = [
    "FILE_KEYS",
    "FITS_SUFFIXES",
    "HDF5_SUFFIXES",
    "LOSS_KEYS",
    "Burst",
    "Restoration",
    "atomic_write",
    "check_not_input",
    "check_free_space",
    "check_output",
    "check_writable",
    "clean_stale_temps",
    "file_format",
    "merge_headers",
    "read_array",
    "read_burst",
    "read_restoration",
    "restoration_nbytes",
    "register_header_comments",
    "write_array",
    "write_burst",
    "write_restoration",
]

"""nnU-Net's `nnUNetv2_plan_and_preprocess`, after a dataset fingerprint written afresh from a smaller sample.

`segment.plan_and_preprocess` runs this in nnU-Net's environment (nnU-Net reads its folders at import):
    python -m midiffusion.nnunet_plan -d DATASET_ID -np N [nnUNetv2_plan_and_preprocess's other options]
It checks the dataset's integrity and writes the fingerprint, then hands over to nnU-Net's own command,
which plans from that fingerprint. nnU-Net's fingerprint step is replaced because:
- it keeps an existing fingerprint unless told `--clean`: a rerun on changed training images (another voxel
  size) would plan, and resample every image, from the old images' spacings and shapes;
- it draws 10^8 foreground intensities whatever the dataset's size (about 15 s on 2 cores) for intensity
  statistics that only its CT normalisation reads (MR channels are z-scored per image); 10^6 samples
  estimate the 0.5 % and 99.5 % percentiles to within a few hundredths of a percent point.
"""

from __future__ import annotations

import argparse
import sys

from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import plan_and_preprocess_entry

FOREGROUND_INTENSITY_SAMPLES = 10**6


class SampledFingerprintExtractor(DatasetFingerprintExtractor):
    """nnU-Net's fingerprint with FOREGROUND_INTENSITY_SAMPLES intensities drawn over the whole dataset."""

    def __init__(self, dataset_name_or_id: str | int, num_processes: int = 8, verbose: bool = False) -> None:
        super().__init__(dataset_name_or_id, num_processes, verbose)
        self.num_foreground_voxels_for_intensitystats = FOREGROUND_INTENSITY_SAMPLES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id")
    parser.add_argument("-np", dest="num_processes", type=int, default=1, help="worker processes")
    args, nnunet_options = parser.parse_known_args(argv)
    # the integrity check first, its messages naming a bad file; the new fingerprint replaces any old one
    extract_fingerprint_dataset(args.dataset_id, SampledFingerprintExtractor, args.num_processes,
                                check_dataset_integrity=True, clean=True, verbose=False, show_progress_bar=False)
    # nnU-Net's command reads sys.argv; without --clean it keeps the fingerprint just written
    sys.argv = ["nnUNetv2_plan_and_preprocess", "-d", str(args.dataset_id), "-np", str(args.num_processes),
                *nnunet_options]
    plan_and_preprocess_entry()


if __name__ == "__main__":
    main()

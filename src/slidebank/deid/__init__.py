"""De-identification: pseudonyms, the DICOM confidentiality profile, conversion of scanner
files into de-identified DICOM WSI, and the byte-level proof that nothing identifying is left."""

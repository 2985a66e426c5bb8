-- Where the projection's last frame lies in the journal (its segment, its offset there and
-- its checksum), written with the mark: a start reads the journal on from that frame instead
-- of reading it all (docs/storage.md, "Recovery"). NULL for a mark written before this
-- migration, or 0: such a start reads the whole journal once.
ALTER TABLE projection ADD COLUMN segment INTEGER;
ALTER TABLE projection ADD COLUMN frame_offset INTEGER;
ALTER TABLE projection ADD COLUMN checksum BLOB;

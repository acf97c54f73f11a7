//! vasprun.xml: total DOS, E_F and spin channels, streamed with `quick-xml` (pull parser, no
//! tree in memory — vasprun files reach hundreds of MB). Projected DOS (`<partial>`), eigenvalues
//! and everything else are skipped without being stored.
//!
//! Shape of the part we read:
//! `<dos><i name="efermi">…</i><total><array>…<set><set comment="spin 1"><r>E dos int</r>…`.
//! A file holding several `<dos>` blocks (several calculations) yields the last one, the final
//! state of the run.

use crate::material::Dos;
use anyhow::{bail, Context, Result};
use quick_xml::events::Event;
use std::io::BufRead;
use std::path::Path;

/// A `BufRead` adapter counting newlines consumed, so XML errors can name a line.
struct LineCounter<R> {
    inner: R,
    lines: u64,
}

impl<R: BufRead> std::io::Read for LineCounter<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let buf = self.inner.fill_buf()?;
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineCounter<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            self.lines += buf[..amt.min(buf.len())].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        self.inner.consume(amt);
    }
}

/// Read the total DOS of a vasprun.xml (plain or gzip).
pub fn read_vasprun_dos(path: &Path) -> Result<Dos> {
    let reader = super::open_reader(path)?;
    parse_vasprun_dos(reader, &path.display().to_string())
}

/// One spin channel of the total DOS as it is read.
#[derive(Default)]
struct Channel {
    energies: Vec<f64>,
    densities: Vec<f64>,
}

/// Streaming state inside the current `<dos>` element.
#[derive(Default)]
struct DosBlock {
    efermi: Option<f64>,
    channels: Vec<(usize, Channel)>,
}

/// Parse the total DOS from any buffered reader over vasprun.xml text.
pub fn parse_vasprun_dos<R: BufRead>(reader: R, origin: &str) -> Result<Dos> {
    let mut xml = quick_xml::Reader::from_reader(LineCounter { inner: reader, lines: 0 });
    xml.config_mut().trim_text(true);
    let mut buf = Vec::with_capacity(1 << 12);
    let mut last: Option<DosBlock> = None;
    let mut current: Option<DosBlock> = None;
    let mut in_total = false;
    let mut in_efermi = false;
    let mut in_r = false;
    // Depth of <set> nesting inside <total>, and the depth at which the current spin set opened.
    let mut set_depth = 0usize;
    let mut spin_set: Option<(usize, usize)> = None; // (spin index, depth)
    let mut text = String::new();
    loop {
        let line = xml.get_ref().lines + 1;
        let event = xml
            .read_event_into(&mut buf)
            .map_err(|e| anyhow::anyhow!("{origin}: malformed XML near line {line}: {e}"))?;
        match event {
            Event::Start(e) => match e.name().as_ref() {
                b"dos" => {
                    current = Some(DosBlock::default());
                }
                b"i" if current.is_some() && !in_total => {
                    let is_efermi = e
                        .try_get_attribute("name")
                        .ok()
                        .flatten()
                        .is_some_and(|a| a.value.as_ref() == b"efermi");
                    if is_efermi {
                        in_efermi = true;
                        text.clear();
                    }
                }
                b"total" if current.is_some() => {
                    in_total = true;
                    set_depth = 0;
                }
                b"set" if in_total => {
                    set_depth += 1;
                    let comment = e
                        .try_get_attribute("comment")
                        .ok()
                        .flatten()
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned());
                    if let Some(c) = comment {
                        if let Some(k) = c.trim().strip_prefix("spin") {
                            let spin: usize = k.trim().parse().with_context(|| {
                                format!("{origin}: line {line}: cannot read the spin index in <set comment=\"{c}\">")
                            })?;
                            spin_set = Some((spin, set_depth));
                            current.as_mut().unwrap().channels.push((spin, Channel::default()));
                        }
                    }
                }
                b"r" if spin_set.is_some() => {
                    in_r = true;
                    text.clear();
                }
                _ => {}
            },
            Event::Text(t) if in_r || in_efermi => {
                let s = t.unescape().map_err(|e| anyhow::anyhow!("{origin}: line {line}: {e}"))?;
                text.push_str(&s);
            }
            Event::End(e) => match e.name().as_ref() {
                b"r" if in_r => {
                    in_r = false;
                    let line = xml.get_ref().lines + 1;
                    let mut tokens = text.split_whitespace();
                    let mut next = |what: &str| -> Result<f64> {
                        let t = tokens.next().with_context(|| {
                            format!("{origin}: line {line}: total-DOS row {:?} has no {what} column", text.trim())
                        })?;
                        super::parse_float(t)
                            .with_context(|| format!("{origin}: line {line}: {what} '{t}' is not a number"))
                    };
                    let energy = next("energy")?;
                    let density = next("density")?;
                    if !energy.is_finite() {
                        bail!("{origin}: line {line}: energy is not finite");
                    }
                    let (_, channel) = current.as_mut().unwrap().channels.last_mut().unwrap();
                    if let Some(&prev) = channel.energies.last() {
                        if energy <= prev {
                            bail!("{origin}: line {line}: energy {energy} does not increase (previous {prev})");
                        }
                    }
                    channel.energies.push(energy);
                    channel.densities.push(density);
                }
                b"i" if in_efermi => {
                    in_efermi = false;
                    let v = super::parse_float(text.trim()).filter(|v| v.is_finite()).with_context(|| {
                        format!("{origin}: line {line}: efermi {:?} is not a finite number", text.trim())
                    })?;
                    current.as_mut().unwrap().efermi = Some(v);
                }
                b"set" if in_total => {
                    if spin_set.is_some_and(|(_, d)| d == set_depth) {
                        spin_set = None;
                    }
                    set_depth = set_depth.saturating_sub(1);
                }
                b"total" => in_total = false,
                b"dos" => {
                    if let Some(block) = current.take() {
                        last = Some(block);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if current.is_some() {
        bail!("{origin}: file ends inside a <dos> element (truncated file?)");
    }
    let block = last.with_context(|| format!("{origin}: no <dos> element (was the DOS written? LORBIT/NEDOS run)"))?;
    let efermi = block.efermi.with_context(|| format!("{origin}: <dos> has no <i name=\"efermi\">"))?;
    let mut channels = block.channels;
    channels.sort_by_key(|(spin, _)| *spin);
    let Some((first_spin, up)) = channels.first().map(|(s, c)| (*s, c)) else {
        bail!("{origin}: <dos><total> has no <set comment=\"spin 1\"> data");
    };
    if first_spin != 1 || up.energies.len() < 2 {
        bail!("{origin}: <dos><total> spin 1 channel is missing or has fewer than 2 points");
    }
    let down = match channels.get(1) {
        None => None,
        Some((2, c)) => {
            if c.energies.len() != up.energies.len() {
                bail!(
                    "{origin}: spin 2 has {} DOS points but spin 1 has {}",
                    c.energies.len(),
                    up.energies.len()
                );
            }
            Some(c.densities.clone())
        }
        Some((s, _)) => bail!("{origin}: unexpected total-DOS channel 'spin {s}'"),
    };
    if channels.len() > 2 {
        bail!("{origin}: total DOS has {} spin channels, expected 1 or 2", channels.len());
    }
    Ok(Dos { energies: up.energies.clone(), densities_up: up.densities.clone(), densities_down: down, efermi })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(rows1: &str, rows2: Option<&str>) -> String {
        let spin2 = rows2.map(|r| format!("<set comment=\"spin 2\">{r}</set>")).unwrap_or_default();
        format!(
            "<?xml version=\"1.0\"?>\n<modeling>\n<dos>\n<i name=\"efermi\"> 1.5 </i>\n<total><array>\n\
             <field>energy</field><set>\n<set comment=\"spin 1\">{rows1}</set>{spin2}</set></array></total>\n\
             <partial><array><set><set comment=\"ion 1\"><set comment=\"spin 1\"><r> 9 9 9 </r></set></set></set></array></partial>\n\
             </dos>\n</modeling>\n"
        )
    }

    #[test]
    fn reads_total_dos_and_ignores_partial() {
        let d = parse_vasprun_dos(doc("<r>0 1 0</r>\n<r>1 2 0</r>", Some("<r>0 3 0</r><r>1 4 0</r>")).as_bytes(), "t").unwrap();
        assert_eq!(d.efermi, 1.5);
        assert_eq!(d.energies, vec![0.0, 1.0]);
        assert_eq!(d.densities_up, vec![1.0, 2.0]);
        assert_eq!(d.densities_down, Some(vec![3.0, 4.0]));
    }

    #[test]
    fn nan_density_is_kept_for_repair_but_bad_tokens_are_errors() {
        let d = parse_vasprun_dos(doc("<r>0 NaN 0</r><r>1 2 0</r>", None).as_bytes(), "t").unwrap();
        assert!(d.densities_up[0].is_nan());
        let err = format!("{:#}", parse_vasprun_dos(doc("<r>0 1 0</r>\n<r>1 abc 0</r>", None).as_bytes(), "vasprun.xml").unwrap_err());
        assert!(err.contains("vasprun.xml: line 8") && err.contains("'abc'"), "{err}");
        let text = doc("<r>0 1 0</r><r>1 2 0</r>", None);
        let cut = &text[..text.find("</total>").unwrap()];
        let err = format!("{:#}", parse_vasprun_dos(cut.as_bytes(), "vasprun.xml").unwrap_err());
        assert!(err.contains("truncated"), "{err}");
    }
}

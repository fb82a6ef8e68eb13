/**
 * The README's configuration reference table is generated from the settings table
 * (`npm run docs` runs scripts/update-readme.mjs); this test keeps it from drifting.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REFERENCE_BEGIN, REFERENCE_END, renderReference } from '../../src/config/reference.js';
import { REPO_ROOT } from '../helpers/processes.js';

describe('README configuration reference', () => {
  it('equals renderReference() (run `npm run docs` after changing a setting)', () => {
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    const begin = readme.indexOf(REFERENCE_BEGIN);
    const end = readme.indexOf(REFERENCE_END);
    assert.ok(begin >= 0, 'README.md has the begin marker');
    assert.ok(end > begin, 'README.md has the end marker after it');
    assert.equal(readme.indexOf(REFERENCE_BEGIN, begin + 1), -1, 'one begin marker');
    const inReadme = readme.slice(begin, end + REFERENCE_END.length);
    assert.equal(inReadme, renderReference());
  });
});

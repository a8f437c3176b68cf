/** This package's version, as package.json says (`test/unit/version.test.ts` holds them together). */
export const version = "0.3.0";
